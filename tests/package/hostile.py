"""Packages built by hand, without TensorFlow: a valid one, and the means to make it hostile."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROGRAM = b"not really a program, but the reader only checks its digest" * 4
SAVED_MODEL = b"\x08\x01saved model bytes"
LABELS = b"cat\ndog\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_members() -> dict[str, bytes]:
    return {
        "stages/00-preprocess/saved_model.pb": SAVED_MODEL,
        "stages/00-preprocess/variables/variables.index": b"index",
        "stages/01-fpga/program.fpga": PROGRAM,
        "stages/02-classifier/saved_model.pb": SAVED_MODEL + b"2",
        "labels.txt": LABELS,
    }


def manifest_for(members: dict[str, bytes], **overrides: Any) -> dict[str, Any]:
    """A manifest (camelCase JSON) describing ``members`` as a three-stage image pipeline."""
    manifest: dict[str, Any] = {
        "formatVersion": 1,
        "name": "tiny",
        "version": "1",
        "createdBy": "tests",
        "pipeline": [
            {
                "kind": "tensorflow",
                "name": "preprocess",
                "path": "stages/00-preprocess",
                "input": {"name": "images", "dtype": "string", "shape": []},
                "output": {"name": "images", "dtype": "float32", "shape": [32, 32, 3]},
            },
            {
                "kind": "fpga",
                "name": "fpga",
                "path": "stages/01-fpga/program.fpga",
                "input": {"name": "input", "dtype": "float32", "shape": [32, 32, 3]},
                "output": {"name": "features", "dtype": "float32", "shape": [8]},
                "format": {"name": "msfp16", "blockSize": 16, "exponentBits": 8, "mantissaBits": 7},
                "weightBytes": 1234,
                "programSha256": sha(members.get("stages/01-fpga/program.fpga", PROGRAM)),
                "programVersion": 1,
            },
            {
                "kind": "keras",
                "name": "classifier",
                "path": "stages/02-classifier",
                "input": {"name": "features", "dtype": "float32", "shape": [None]},
                "output": {"name": "probabilities", "dtype": "float32", "shape": [2]},
            },
        ],
        "labels": "labels.txt",
        "members": [{"path": p, "sha256": sha(d), "size": len(d)} for p, d in members.items()],
    }
    manifest.update(overrides)
    return manifest


def write_zip(
    path: Path,
    entries: list[tuple[str | zipfile.ZipInfo, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def package(
    path: Path,
    *,
    members: dict[str, bytes] | None = None,
    manifest: dict[str, Any] | None = None,
    extra: Sequence[tuple[str | zipfile.ZipInfo, bytes]] = (),
    skip: tuple[str, ...] = (),
) -> Path:
    """Zip ``members`` (default: the valid ones) with ``manifest`` (default: the matching one)."""
    members = valid_members() if members is None else members
    manifest = manifest_for(members) if manifest is None else manifest
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [("manifest.json", json.dumps(manifest).encode())]
    entries += [(name, data) for name, data in members.items() if name not in skip]
    entries += list(extra)
    return write_zip(path, entries)


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode bits mean what they say
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def patch_central_directory(path: Path, *, entry: int, offset: int, value: bytes) -> None:
    """Overwrite bytes at ``offset`` in the ``entry``-th central directory record."""
    data = bytearray(path.read_bytes())
    position = -1
    for _ in range(entry + 1):
        position = data.index(b"PK\x01\x02", position + 1)
    data[position + offset : position + offset + len(value)] = value
    path.write_bytes(bytes(data))
