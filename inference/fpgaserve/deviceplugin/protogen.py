"""Regenerates the Python modules of the kubelet Device Plugin API from ``v1beta1/api.proto``.

Role: a developer tool (``python -m fpgaserve.deviceplugin.protogen``) and the engine of the drift
test (tests/deviceplugin/test_protogen.py). The generated ``api_pb2*.py`` are committed so that the
plugin runs without grpcio-tools, a test-only dependency that is imported only here, when generating.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["GENERATED_FILES", "PROTO_FILE", "generate", "main", "source_root"]

# Relative to the source root, so that the generated code imports its siblings by their full name.
PROTO_FILE = "fpgaserve/deviceplugin/v1beta1/api.proto"
GENERATED_FILES: tuple[str, ...] = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def source_root() -> Path:
    """The directory that holds the ``fpgaserve`` package (``inference/`` in the repository)."""
    return Path(__file__).resolve().parents[2]


def generate(*, out_dir: Path, proto_file: str = PROTO_FILE) -> dict[str, Path]:
    """Run protoc on ``proto_file`` (relative to ``source_root()``) into ``out_dir``; returns the
    generated files by name. The DRA driver's protos go through here too (``fpgaserve.dra.protogen``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc runs in its own process: in-process it shares protobuf's runtime with whatever the caller
    # loaded (TensorFlow's, in a test session) and can crash it.
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{source_root()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        proto_file,
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {source_root() / proto_file}: {done.stderr.strip()}")
    package_dir = out_dir / Path(proto_file).parent
    return {name: package_dir / name for name in GENERATED_FILES}


def main() -> int:
    """Regenerate the committed modules in place."""
    generated = generate(out_dir=source_root())
    for path in generated.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
