"""The inference server: an aiohttp app serving one ``ModelRuntime`` over HTTP(S), and gRPC beside it.

Role: ``fpgaserve serve`` (``server_main``) runs it; tests and embedders build it with
``make_app(runtime=..., settings=ServerSettings(...))``. Faces: ``POST /score``, the Open Inference
Protocol v2, TF Serving REST; probes, Prometheus metrics and an OpenAPI document beside them.
With ``grpc_port`` set, ``server_main`` also serves OIP v2 gRPC, TF Serving's PredictionService and
gRPC health (``grpc_server``) over the same data plane.
Exports resolve lazily, so that ``fpgaserve --help`` does not load aiohttp or numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ServerSettings", "make_app"]

_EXPORTS = {"ServerSettings": "settings", "make_app": "web_app"}

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and readers
    from fpgaserve.server.settings import ServerSettings
    from fpgaserve.server.web_app import make_app


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fpgaserve.server' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fpgaserve.server.{module}"), name)
