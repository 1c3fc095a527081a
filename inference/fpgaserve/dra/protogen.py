"""Regenerates the Python modules of the kubelet's DRA and plugin registration APIs from their protos.

Role: a developer tool (``python -m fpgaserve.dra.protogen``) and the engine of the drift test
(tests/dra/test_protogen.py). It runs the device plugin's protoc wrapper on each proto; the generated
``api_pb2*.py`` are committed so that the driver needs no grpcio-tools at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpgaserve.deviceplugin.protogen import GENERATED_FILES, generate, source_root

__all__ = ["GENERATED_FILES", "PROTO_FILES", "generate_all", "main"]

# Relative to the source root, so that the generated code imports its siblings by their full name.
PROTO_FILES: tuple[str, ...] = (
    "fpgaserve/dra/v1/api.proto",
    "fpgaserve/dra/pluginregistration/api.proto",
)


def generate_all(*, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Run protoc on every proto into ``out_dir``: the generated files by proto, then by name."""
    return {proto: generate(out_dir=out_dir, proto_file=proto) for proto in PROTO_FILES}


def main() -> int:
    """Regenerate the committed modules in place."""
    for generated in generate_all(out_dir=source_root()).values():
        for path in generated.values():
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
