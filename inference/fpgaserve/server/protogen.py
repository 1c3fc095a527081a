"""Regenerates ``protos/descriptors.binpb``, the compiled gRPC protocols the server serves.

Role: a developer tool (``python -m fpgaserve.server.protogen``) and the engine of the drift test
(tests/server/test_protogen.py). protoc (grpcio-tools, a test-only dependency imported only here)
compiles the hand-written ``protos/*.proto`` into one ``FileDescriptorSet``, which is committed and
loaded at run time by ``grpc_messages`` into a descriptor pool of its own.

Why a descriptor set and not ``*_pb2.py`` modules as the device plugin has: generated modules
register their messages in protobuf's process-wide default pool, and the names here
(``inference.ModelInferRequest``, ``tensorflow.TensorProto``) are also registered there by
TensorFlow itself (which the server's pipelines import), by ``tritonclient.grpc`` and by
``tensorflow-serving-api``: a second definition of one name fails the import ("duplicate symbol").
A private pool serves the same wire format beside all of them, on protobuf 6 and 7 alike.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["DESCRIPTOR_SET", "PROTO_FILES", "generate", "main", "source_root"]

# Relative to the source root, so that imports between the protos name their full path.
PROTO_FILES: tuple[str, ...] = (
    "fpgaserve/server/protos/grpc_predict_v2.proto",
    "fpgaserve/server/protos/tensorflow_framework.proto",
    "fpgaserve/server/protos/tensorflow_serving.proto",
)
DESCRIPTOR_SET = "fpgaserve/server/protos/descriptors.binpb"


def source_root() -> Path:
    """The directory that holds the ``fpgaserve`` package (``inference/`` in the repository)."""
    return Path(__file__).resolve().parents[2]


def generate(*, out_file: Path) -> Path:
    """Compile the protos (with the well-known types they import) into ``out_file``."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # protoc runs in its own process, as in the device plugin's protogen: in-process it shares
    # protobuf's runtime with whatever the caller loaded.
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{source_root()}",
        f"-I{_well_known_types()}",
        "--include_imports",
        f"--descriptor_set_out={out_file}",
        *PROTO_FILES,
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {', '.join(PROTO_FILES)}: {done.stderr.strip()}")
    return out_file


def _well_known_types() -> Path:
    import grpc_tools  # test-only dependency: needed to generate, never to serve

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def main() -> int:
    """Regenerate the committed descriptor set in place."""
    path = generate(out_file=source_root() / DESCRIPTOR_SET)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
