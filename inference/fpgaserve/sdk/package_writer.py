"""Write ``service_def.zip``: every stage's files, the labels, and a manifest listing their digests.

Role: the writer side of the package format (docs/package.md), called by ``ModelDefinition.save``.
Stages export into a scratch directory; every file there becomes a member with its sha256 and size;
the manifest is validated (stage shapes must chain) before the zip is written, and the zip appears
at its final path only once complete.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpgaserve.api.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    MemberSpec,
    is_member_path,
    parse_manifest,
)
from fpgaserve.sdk.stages import Stage

__all__ = ["LABELS_FILE", "PackageInfo", "created_by", "write_package"]

LABELS_FILE = "labels.txt"
_CHUNK = 1 << 20
# Fixed timestamps make a package's bytes depend on its contents alone.
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PackageInfo:
    """A written package: where it is, its digest (what an FpgaModel's source.sha256 wants), its manifest."""

    path: Path
    sha256: str
    size: int
    manifest: Manifest


def created_by() -> str:
    from importlib import metadata

    try:
        return f"fpgaserve {metadata.version('fpgaserve')}"
    except metadata.PackageNotFoundError:
        return "fpgaserve"


def write_package(
    stages: Sequence[Stage],
    *,
    path: str | os.PathLike[str],
    name: str,
    version: str,
    labels: Sequence[str] | None = None,
    host_lowering: bool = True,
) -> PackageInfo:
    """Export ``stages`` and write the package to ``path``; raises ValueError if stages do not chain.

    ``host_lowering=False`` leaves out the TensorFlow-free form of the stages fpgaserve built (the
    package then reads on servers older than that form, and always needs TensorFlow)."""
    if not stages:
        raise ValueError("the pipeline is empty: append at least one stage to ModelDefinition().pipeline")
    for index, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise TypeError(f"pipeline[{index}] is a {type(stage).__name__}, not a stage")
    dest = Path(path).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fpgaserve-package-") as scratch:
        root = Path(scratch)
        specs = [
            _export(stage, index, root, host_lowering=host_lowering) for index, stage in enumerate(stages)
        ]
        labels_member = None
        if labels is not None:
            labels_member = LABELS_FILE
            _write_labels(root / LABELS_FILE, labels)
        manifest = parse_manifest(
            {
                "format_version": FORMAT_VERSION,
                "name": name,
                "version": version,
                "created_by": created_by(),
                "pipeline": specs,
                "labels": labels_member,
                "members": [m.model_dump() for m in _members(root)],
            }
        )
        _write_zip(root, manifest, dest)
    digest, size = _digest(dest)
    return PackageInfo(path=dest, sha256=digest, size=size, manifest=manifest)


def _export(stage: Stage, index: int, root: Path, *, host_lowering: bool) -> dict[str, Any]:
    name = stage.name or f"{stage.kind}-{index}"
    relative = f"stages/{index:02d}-{name}"
    exported = stage.export(root / relative)
    extra = dict(exported.extra)
    host = extra.get("host")
    if host is not None and not host_lowering:
        del extra["host"], extra["runtime"]
        if "weights" in host:
            (root / relative / host["weights"]).unlink()
    elif host is not None and "weights" in host:  # the stage gives it relative to its directory
        extra["host"] = {**host, "weights": f"{relative}/{host['weights']}"}
    return {
        "kind": exported.kind,
        "name": name,
        "path": f"{relative}/{exported.path}" if exported.path else relative,
        "input": exported.input,
        "output": exported.output,
        **extra,
    }


def _write_labels(path: Path, labels: Sequence[str]) -> None:
    for index, label in enumerate(labels):
        if "\n" in label or "\r" in label:
            raise ValueError(f"labels[{index}] contains a line break")
    path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")


def _members(root: Path) -> list[MemberSpec]:
    members = []
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        relative = path.relative_to(root).as_posix()
        if not stat.S_ISREG(mode):
            raise ValueError(f"{relative}: packages hold regular files only (no links)")
        if not is_member_path(relative):
            raise ValueError(
                f"{relative}: member paths may use letters, digits and ._@+=- and must not start a "
                "component with a dot"
            )
        digest, size = _digest(path)
        members.append(MemberSpec(path=relative, sha256=digest, size=size))
    return members


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _compression(member: str) -> int:
    # Device programs are zips of already dense arrays and variables are float data: deflate
    # would cost time and win a few percent.
    leaf = member.rsplit("/", 1)[-1]
    if leaf.endswith(".fpga") or leaf.startswith("variables.data-"):
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _zip_info(member: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=_EPOCH)
    info.compress_type = _compression(member)
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.file_size = size
    return info


def _write_zip(root: Path, manifest: Manifest, dest: Path) -> None:
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            raw = manifest.to_json().encode()
            zf.writestr(_zip_info(MANIFEST_NAME, len(raw)), raw)
            for member in manifest.members:
                with (
                    (root / member.path).open("rb") as src,
                    zf.open(_zip_info(member.path, member.size), "w") as out,
                ):
                    shutil.copyfileobj(src, out, _CHUNK)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
