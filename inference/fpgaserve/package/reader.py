"""Verify a service package before anything leaves it, then extract it.

Role: the reader side of the package format (docs/package.md). ``storage-init`` calls
``load_service_definition`` on a downloaded ``service_def.zip``; the pipeline runtime calls it on a
zip or on a directory that storage-init extracted. Standard library and pydantic only: no numpy, no
TensorFlow, so the operator can import it too.

Order of checks, all before a single byte is written: the zip's own entries (names, types, sizes,
compression ratios, overlaps), the manifest (format version, schema, stage chaining), the member
set against the manifest, and every member's size and sha256. Extraction then writes into a fresh
staging directory (hashing again as it writes) and moves the result into place only when it is whole.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from fpgaserve.api.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    MemberSpec,
    is_member_path,
    parse_manifest,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PackageError",
    "PackageLimits",
    "ServiceDefinition",
    "load_service_definition",
    "verify_package",
]

GiB = 1 << 30
MiB = 1 << 20
_CHUNK = 1 << 20
_LOCAL_HEADER_BYTES = 30  # fixed part of a zip local file header


class PackageError(ValueError):
    """A package that is refused; the message names the member and the problem."""


@dataclass(frozen=True)
class PackageLimits:
    """Bounds on what a package may hold (the defaults fit ResNet-50-sized pipelines many times)."""

    max_package_bytes: int = 4 * GiB
    max_member_bytes: int = 2 * GiB
    max_total_bytes: int = 4 * GiB
    max_members: int = 10_000
    max_manifest_bytes: int = 1 * MiB
    # Uncompressed/compressed size, of one member and of the whole archive; checked from
    # ratio_floor_bytes up, since small text members (JSON, labels) legitimately compress well.
    # The whole-archive bound is what stops many members each just under the floor.
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1 * MiB


DEFAULT_LIMITS = PackageLimits()


@dataclass(frozen=True)
class ServiceDefinition:
    """A verified, extracted package: its directory and manifest."""

    root: Path
    manifest: Manifest

    def member_path(self, path: str) -> Path:
        return self.root.joinpath(*PurePosixPath(path).parts)

    def labels(self) -> list[str] | None:
        if self.manifest.labels is None:
            return None
        text = self.member_path(self.manifest.labels).read_text(encoding="utf-8")
        return text.splitlines()


def verify_package(path: str | os.PathLike[str], *, limits: PackageLimits = DEFAULT_LIMITS) -> Manifest:
    """Run every check ``load_service_definition`` runs on a zip, without extracting anything."""
    with _open_zip(Path(path), limits) as zf:
        return _verify_zip(zf, limits)


def load_service_definition(
    path: str | os.PathLike[str],
    *,
    dest: str | os.PathLike[str] | None = None,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> ServiceDefinition:
    """Verify a package and extract it into ``dest``; or verify an already extracted directory.

    ``path`` is a ``service_def.zip`` (extracted into ``dest``, which must not already hold any of
    its members; without ``dest``, into a new temporary directory the caller owns) or a directory
    holding an extracted package (verified in place; ``dest`` must then be None).
    Raises ``PackageError`` naming the problem; nothing is written unless every check passes.
    """
    source = Path(path)
    if source.is_dir():
        if dest is not None:
            raise ValueError("dest applies to package files, not to an extracted directory")
        return ServiceDefinition(root=source, manifest=_verify_directory(source, limits))
    with _open_zip(source, limits) as zf:
        manifest = _verify_zip(zf, limits)
        if dest is None:
            import tempfile

            root = Path(tempfile.mkdtemp(prefix="fpgaserve-package-"))
        else:
            root = Path(dest)
            root.mkdir(parents=True, exist_ok=True)
        _extract(zf, manifest, root)
    return ServiceDefinition(root=root, manifest=manifest)


# -- the zip's own entries ------------------------------------------------------------------


def _open_zip(path: Path, limits: PackageLimits) -> zipfile.ZipFile:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the package ({exc.strerror})") from None
    if size > limits.max_package_bytes:
        raise PackageError(f"{path}: package of {size} bytes exceeds the limit of {limits.max_package_bytes}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{path}: not a zip file ({exc})") from None


def _check_name(name: str) -> None:
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise PackageError(f"member {name!r}: empty name or control characters")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"member {name!r}: absolute path")
    if "\\" in name:
        raise PackageError(f"member {name!r}: backslash in name (a Windows path separator)")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise PackageError(f"member {name!r}: path traversal ('..')")
    if any(part in ("", ".") for part in parts):
        raise PackageError(f"member {name!r}: empty or '.' path component")


def _check_entries(zf: zipfile.ZipFile, limits: PackageLimits) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise PackageError(f"package has {len(infos)} members, more than the limit of {limits.max_members}")
    seen: set[str] = set()
    files: list[zipfile.ZipInfo] = []
    total = packed = 0
    for info in infos:
        name = info.filename
        _check_name(name)
        folded = name.rstrip("/").casefold()
        if folded in seen:  # exact duplicates, and names that collide on case-insensitive disks
            raise PackageError(f"member {name!r}: duplicate name")
        seen.add(folded)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise PackageError(f"member {name!r}: symbolic link (links are not allowed in packages)")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PackageError(f"member {name!r}: not a regular file (mode {oct(kind)})")
        if info.flag_bits & 0x1:
            raise PackageError(f"member {name!r}: encrypted")
        if info.is_dir():
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(f"member {name!r}: unsupported compression method {info.compress_type}")
        if info.file_size > limits.max_member_bytes:
            raise PackageError(
                f"member {name!r}: oversize ({info.file_size} bytes, limit {limits.max_member_bytes})"
            )
        if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise PackageError(
                f"member {name!r}: compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                f"exceeds {limits.max_ratio:.0f}:1 (zip bomb?)"
            )
        total += info.file_size
        packed += info.compress_size
        if total > limits.max_total_bytes:
            raise PackageError(
                f"package expands to more than {limits.max_total_bytes} bytes in total (zip bomb?)"
            )
        files.append(info)
    if total >= limits.ratio_floor_bytes and total > limits.max_ratio * max(packed, 1):
        raise PackageError(
            f"package expands from {packed} to {total} bytes: compression ratio "
            f"{total / max(packed, 1):.0f}:1 exceeds {limits.max_ratio:.0f}:1 over the whole archive (zip bomb?)"
        )
    _check_no_overlap(files)
    return files


def _check_no_overlap(files: list[zipfile.ZipInfo]) -> None:
    # Overlapping entries (several names sharing one compressed stream) are how "better" zip bombs
    # multiply their size; honest writers never produce them.
    ordered = sorted(files, key=lambda i: i.header_offset)
    for before, after in itertools.pairwise(ordered):
        end = before.header_offset + _LOCAL_HEADER_BYTES + len(before.orig_filename) + before.compress_size
        if end > after.header_offset:
            raise PackageError(f"members {before.filename!r} and {after.filename!r} overlap (zip bomb?)")


# -- the manifest and the member set --------------------------------------------------------


def _parse(raw: bytes) -> Manifest:
    try:
        return parse_manifest(raw)
    except ManifestError as exc:
        raise PackageError(str(exc)) from None


def _read_manifest_bytes(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], limits: PackageLimits) -> bytes:
    info = next((i for i in files if i.filename == MANIFEST_NAME), None)
    if info is None:
        raise PackageError(f"package has no {MANIFEST_NAME}: not an fpgaserve service definition")
    if info.file_size > limits.max_manifest_bytes:
        raise PackageError(f"{MANIFEST_NAME}: oversize ({info.file_size} bytes)")
    with zf.open(info) as f:
        return f.read(limits.max_manifest_bytes + 1)


def _verify_zip(zf: zipfile.ZipFile, limits: PackageLimits) -> Manifest:
    files = _check_entries(zf, limits)
    manifest = _parse(_read_manifest_bytes(zf, files, limits))
    entries = {i.filename: i for i in files if i.filename != MANIFEST_NAME}
    listed = {m.path: m for m in manifest.members}
    for name in sorted(entries.keys() - listed.keys()):
        raise PackageError(f"member {name!r} is in the package but not listed in {MANIFEST_NAME}")
    for name in sorted(listed.keys() - entries.keys()):
        raise PackageError(f"member {name!r} is listed in {MANIFEST_NAME} but missing from the package")
    for member in manifest.members:
        info = entries[member.path]
        if info.file_size != member.size:
            raise PackageError(
                f"member {member.path!r}: size {info.file_size} does not match the manifest's {member.size}"
            )
        with zf.open(info) as f:
            _check_digest(member, _chunks(f, member))
    return manifest


def _chunks(stream: IO[bytes], member: MemberSpec) -> Iterator[bytes]:
    read = 0
    while chunk := stream.read(_CHUNK):
        read += len(chunk)
        if read > member.size:
            raise PackageError(f"member {member.path!r}: more data than its declared {member.size} bytes")
        yield chunk


def _check_digest(member: MemberSpec, chunks: Iterator[bytes]) -> None:
    digest = hashlib.sha256()
    try:
        for chunk in chunks:
            digest.update(chunk)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:  # a CRC or stream error inside the zip
        raise PackageError(f"member {member.path!r}: corrupt ({exc})") from None
    if digest.hexdigest() != member.sha256:
        raise PackageError(f"member {member.path!r}: sha256 does not match the manifest (bad digest)")


# -- extraction and extracted directories ---------------------------------------------------


def _extract(zf: zipfile.ZipFile, manifest: Manifest, root: Path) -> None:
    staging = root / f".staging-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        _write_member(staging / MANIFEST_NAME, zf.read(MANIFEST_NAME))
        for member in manifest.members:
            target = staging.joinpath(*PurePosixPath(member.path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(member.path) as src, open(target, "xb") as out:
                for chunk in _chunks(src, member):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != member.sha256:  # the file changed since it was verified
                raise PackageError(f"member {member.path!r}: sha256 changed during extraction")
        for entry in sorted(staging.iterdir()):
            final = root / entry.name
            if final.exists() or final.is_symlink():
                raise PackageError(f"{final} already exists: extract into an empty directory")
        for entry in sorted(staging.iterdir()):
            entry.rename(root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_member(target: Path, data: bytes) -> None:
    with open(target, "xb") as out:
        out.write(data)


def _verify_directory(root: Path, limits: PackageLimits) -> Manifest:
    manifest_path = root / MANIFEST_NAME
    _require_regular(root, MANIFEST_NAME)
    if manifest_path.stat().st_size > limits.max_manifest_bytes:
        raise PackageError(f"{manifest_path}: oversize")
    manifest = _parse(manifest_path.read_bytes())
    for member in manifest.members:
        if not is_member_path(member.path):  # pragma: no cover - the schema already refuses these
            raise PackageError(f"member {member.path!r}: invalid path")
        path = _require_regular(root, member.path)
        size = path.stat().st_size
        if size != member.size:
            raise PackageError(
                f"member {member.path!r}: size {size} does not match the manifest's {member.size}"
            )
        with path.open("rb") as f:
            _check_digest(member, _chunks(f, member))
    return manifest


def _require_regular(root: Path, member: str) -> Path:
    """The member's path under ``root``, refusing links anywhere along it."""
    path = root
    for part in PurePosixPath(member).parts:
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            raise PackageError(
                f"member {member!r} is listed in {MANIFEST_NAME} but missing from {root}"
            ) from None
        if stat.S_ISLNK(mode):
            raise PackageError(f"member {member!r}: {path} is a symbolic link")
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise PackageError(f"member {member!r}: {path} is not a regular file")
    if info.st_nlink > 1:
        raise PackageError(f"member {member!r}: {path} is a hard link ({info.st_nlink} names)")
    return path
