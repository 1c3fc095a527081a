"""The message classes of the server's gRPC protocols, built from the committed descriptor set.

Role: ``grpc_v2``, ``grpc_tfserving``, ``grpc_server`` and the SDK's gRPC client (``sdk.grpc_client``)
take their request and response classes from here: ``oip("ModelInferRequest")``,
``tfs("PredictRequest")``, ``tf("TensorProto")``. The classes live in a descriptor pool of this
module's own (see ``protogen`` for why), so they coexist with TensorFlow's, tritonclient's and
tensorflow-serving-api's classes of the same names in one process; on the wire they are the same.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["DESCRIPTOR_SET_PATH", "oip", "pool", "tf", "tfs"]

DESCRIPTOR_SET_PATH = Path(__file__).resolve().parent / "protos" / "descriptors.binpb"


@functools.cache
def pool() -> descriptor_pool.DescriptorPool:
    """The private pool holding the compiled protos (and the well-known types they import)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET_PATH.read_bytes())
    private = descriptor_pool.DescriptorPool()
    for file in files.file:  # protoc writes dependencies before their dependents
        private.Add(file)
    return private


@functools.cache
def _message(full_name: str) -> Any:
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


def oip(name: str) -> Any:
    """A message class of the Open Inference Protocol (package ``inference``)."""
    return _message(f"inference.{name}")


def tfs(name: str) -> Any:
    """A message class of TF Serving's API (package ``tensorflow.serving``)."""
    return _message(f"tensorflow.serving.{name}")


def tf(name: str) -> Any:
    """A message class of TensorFlow's framework protos (package ``tensorflow``)."""
    return _message(f"tensorflow.{name}")
