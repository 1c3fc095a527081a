"""Reading a service package's manifest where it lives, without downloading the package.

Role: called by ``fpgaserve.operator.reconcile_model`` for http(s):// and s3:// sources (the ones the
operator itself can reach; pvc:// and file:// need a mount, so storage-init checks them in the pod).
``manifest.json`` is the first member of every ``service_def.zip``, so one ranged GET of the first
bytes is enough: ``manifest_from_head`` takes that member out of the zip's local header, and
``fpgaserve.api.manifest`` parses it. Errors never repeat the URI (a presigned URL's query is a
credential) nor a token.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from fpgaserve.api.manifest import MANIFEST_NAME, Manifest, ManifestError, parse_manifest
from fpgaserve.api.sigv4 import EMPTY_SHA256, Credentials, canonical_path, sign

__all__ = [
    "HEAD_BYTES",
    "PackageInfo",
    "PackageUnreachable",
    "manifest_from_head",
    "read_package_info",
    "s3_head_request",
]

# How much of the package is fetched: the local header and the manifest must fit.
HEAD_BYTES = 1024 * 1024
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIGNATURE = 0x04034B50
_TOTAL = re.compile(r"/(\d+)$")


class PackageUnreachable(Exception):
    """The source did not answer with the package (network trouble, HTTP errors)."""


@dataclass(frozen=True)
class PackageInfo:
    """What the operator learns about a package: its size (when the server says) and manifest."""

    size_bytes: int | None
    manifest: Manifest


def manifest_from_head(head: bytes) -> bytes:
    """The bytes of ``manifest.json``, the first member of the zip that ``head`` starts."""
    if len(head) < _LOCAL_HEADER.size:
        raise ManifestError("not a service package: too short for a zip file")
    signature, _, flags, method, _, _, crc, compressed, size, name_len, extra_len = _LOCAL_HEADER.unpack_from(
        head
    )
    if signature != _LOCAL_SIGNATURE:
        raise ManifestError("not a service package: not a zip file")
    start = _LOCAL_HEADER.size + name_len + extra_len
    name = head[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_len]
    if name != MANIFEST_NAME.encode():
        raise ManifestError(f"not a service package: its first member is not {MANIFEST_NAME}")
    if flags & 0x1:
        raise ManifestError(f"{MANIFEST_NAME} is encrypted")
    if flags & 0x8 or compressed in (0, 0xFFFFFFFF):
        raise ManifestError(f"{MANIFEST_NAME} has no sizes in its zip header (written as a stream?)")
    if start + compressed > len(head):
        raise ManifestError(f"{MANIFEST_NAME} is larger than the {HEAD_BYTES} bytes the operator reads")
    raw = head[start : start + compressed]
    if method == 0:
        data = raw
    elif method == 8:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, HEAD_BYTES)
        except zlib.error:
            raise ManifestError(f"{MANIFEST_NAME}: corrupt compressed data") from None
    else:
        raise ManifestError(f"{MANIFEST_NAME}: unsupported zip compression method {method}")
    if len(data) != size or zlib.crc32(data) != crc:
        raise ManifestError(f"{MANIFEST_NAME}: size or CRC does not match its zip header")
    return data


def s3_head_request(
    uri: str, *, endpoint: str | None, credentials: Credentials | None, region: str | None
) -> tuple[str, dict[str, str]]:
    """URL and (SigV4-signed, when there are credentials) headers of a ranged GET of an s3:// object:
    path-style on a custom endpoint (MinIO and other S3-compatible stores), else AWS's host."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path).lstrip("/")
    region = region or "us-east-1"
    if endpoint:
        base = urlsplit(endpoint)
        scheme, host, path = base.scheme, base.netloc, f"{base.path.rstrip('/')}/{bucket}/{key}"
    else:
        scheme, host, path = "https", f"s3.{region}.amazonaws.com", f"/{bucket}/{key}"
    headers = {"range": f"bytes=0-{HEAD_BYTES - 1}", "x-amz-content-sha256": EMPTY_SHA256}
    if credentials is not None:
        headers = sign(method="GET", host=host, path=path, headers=headers, credentials=credentials,
                       region=region).headers  # fmt: skip
        headers.pop("host")  # sent from the URL
    return urlunsplit((scheme, host, canonical_path(path), "", "")), headers


async def read_package_info(
    uri: str, *, token: str | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> PackageInfo:
    """Fetch the head of a package over HTTP(S) and parse its manifest (ManifestError when the
    package is bad, PackageUnreachable when it cannot be fetched). ``headers`` replace the default
    Range header (a signed S3 request brings its own)."""
    headers = dict(headers) if headers else {"Range": f"bytes=0-{HEAD_BYTES - 1}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(uri, headers=headers, allow_redirects=False) as response,
        ):
            if response.status not in (200, 206):
                raise PackageUnreachable(f"GET of the package answered {response.status} {response.reason}")
            head = bytearray()
            # A server that ignores Range sends everything: read only what is needed.
            async for chunk in response.content.iter_chunked(64 * 1024):
                head += chunk
                if len(head) >= HEAD_BYTES:
                    break
            size = _total_size(response)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PackageUnreachable(f"GET of the package failed: {type(exc).__name__}") from None
    return PackageInfo(size_bytes=size, manifest=parse_manifest(manifest_from_head(bytes(head[:HEAD_BYTES]))))


def _total_size(response: aiohttp.ClientResponse) -> int | None:
    if response.status == 206:
        match = _TOTAL.search(response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    return response.content_length
