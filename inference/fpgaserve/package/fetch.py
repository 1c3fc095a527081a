"""Download a package from file://, pvc://, http(s):// or s3://, verifying its sha256 as it streams.

Role: the transport half of ``fpgaserve storage-init`` (the other half is
``load_service_definition``). Standard library only: urllib for HTTP(S), ``sigv4`` for S3.
Secrets (from ``--credentials-dir``, a URI's user info or a presigned query) never reach a log line
or an error message: URIs are shown through ``redact``, and auth headers are not forwarded when a
server redirects elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from fpgaserve.api.sigv4 import EMPTY_SHA256, Credentials, canonical_path, sign

__all__ = ["FetchError", "FetchOptions", "fetch", "read_s3_credentials", "redact"]

logger = logging.getLogger(__name__)
_CHUNK = 1 << 20
_RETRIABLE = {429, 500, 502, 503, 504}


class FetchError(RuntimeError):
    """The package could not be fetched, or its bytes are not the ones asked for."""


@dataclass(frozen=True)
class FetchOptions:
    credentials_dir: Path | None = None
    endpoint: str | None = None  # S3-compatible endpoint (MinIO...); s3:// only
    pvc_root: Path = Path("/mnt/source")  # where a pvc:// claim is mounted
    max_bytes: int = 4 << 30
    timeout_s: float = 60.0
    attempts: int = 3
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


def redact(uri: str) -> str:
    """The URI without user info and query (presigned URLs carry their signature in the query)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "<redacted>" if parts.query else "", ""))


def fetch(uri: str, dest: Path, *, sha256: str, options: FetchOptions = FetchOptions()) -> int:
    """Write the object at ``uri`` to ``dest``; returns its size. Raises FetchError on a digest mismatch."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise FetchError("--sha256 must be 64 lower-case hex digits")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("file", "pvc"):
        source = _local_path(uri, scheme, options)
        size = _copy_verified(lambda: source.open("rb"), dest, sha256=sha256, uri=uri, options=options)
    elif scheme in ("http", "https"):
        size = _download(_http_request(uri, options), dest, sha256=sha256, uri=uri, options=options)
    elif scheme == "s3":
        size = _download(_s3_request(uri, options), dest, sha256=sha256, uri=uri, options=options)
    else:
        raise FetchError(f"{redact(uri)}: unsupported scheme; use file://, pvc://, http(s):// or s3://")
    logger.info("fetched %s (%d bytes, sha256 verified)", redact(uri), size)
    return size


# -- local sources ---------------------------------------------------------------------------


def _local_path(uri: str, scheme: str, options: FetchOptions) -> Path:
    parts = urlsplit(uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{redact(uri)}: file:// URIs name a local path (file:///path)")
        return Path(url2pathname(parts.path))
    # pvc://CLAIM/PATH: the claim is mounted at pvc_root; PATH is inside it.
    inside = unquote(parts.path).lstrip("/")
    root = options.pvc_root.resolve()
    path = (root / inside).resolve()
    if not inside or not path.is_relative_to(root):
        raise FetchError(f"{redact(uri)}: the path must name a file inside the claim")
    return path


def _copy_verified(
    open_source: Callable[[], BinaryIO], dest: Path, *, sha256: str, uri: str, options: FetchOptions
) -> int:
    try:
        with open_source() as source:
            return _stream(
                iter(lambda: source.read(_CHUNK), b""), dest, sha256=sha256, uri=uri, options=options
            )
    except OSError as exc:
        raise FetchError(f"{redact(uri)}: cannot read ({exc.strerror or exc})") from None


def _stream(chunks: Iterator[bytes], dest: Path, *, sha256: str, uri: str, options: FetchOptions) -> int:
    digest = hashlib.sha256()
    size = 0
    try:
        with dest.open("wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > options.max_bytes:
                    raise FetchError(f"{redact(uri)}: larger than the limit of {options.max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise FetchError(
            f"{redact(uri)}: sha256 mismatch: expected {sha256}, got {digest.hexdigest()} "
            "(the package changed since it was registered, or the download was corrupted)"
        )
    return size


# -- HTTP(S) and S3 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    url: str
    headers: dict[str, str]  # sent, but never to another host after a redirect
    follow_redirects: bool


def _http_request(uri: str, options: FetchOptions) -> _Request:
    parts = urlsplit(uri)
    headers: dict[str, str] = {}
    if parts.username is not None:
        basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(basic).decode()
    elif options.credentials_dir is not None:
        token = _secret(options.credentials_dir, "token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return _Request(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), headers, True)


def read_s3_credentials(directory: Path) -> tuple[Credentials | None, str | None]:
    """Credentials and region from a Secret mounted as files (``AWS_ACCESS_KEY_ID``, ...)."""
    key_id = _secret(directory, "AWS_ACCESS_KEY_ID")
    secret = _secret(directory, "AWS_SECRET_ACCESS_KEY")
    region = _secret(directory, "AWS_REGION") or _secret(directory, "AWS_DEFAULT_REGION")
    if not key_id and not secret:
        return None, region
    if not key_id or not secret:
        raise FetchError(
            f"{directory}: needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY files (one is missing)"
        )
    return Credentials(key_id, secret, _secret(directory, "AWS_SESSION_TOKEN")), region


def _s3_request(uri: str, options: FetchOptions) -> _Request:
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path).lstrip("/")
    if not bucket or not key or parts.query:
        raise FetchError(f"{redact(uri)}: expected s3://BUCKET/KEY")
    credentials, region = (None, None)
    if options.credentials_dir is not None:
        credentials, region = read_s3_credentials(options.credentials_dir)
    region = region or "us-east-1"
    if options.endpoint:
        endpoint = urlsplit(options.endpoint)
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc or endpoint.username:
            raise FetchError("--endpoint must be http(s)://HOST[:PORT] without credentials")
        scheme, host, path = endpoint.scheme, endpoint.netloc, f"{endpoint.path.rstrip('/')}/{bucket}/{key}"
    elif "." in bucket:  # dotted buckets break virtual-host TLS; use path style
        scheme, host, path = "https", f"s3.{region}.amazonaws.com", f"/{bucket}/{key}"
    else:
        scheme, host, path = "https", f"{bucket}.s3.{region}.amazonaws.com", f"/{key}"
    headers = {"x-amz-content-sha256": EMPTY_SHA256}
    if credentials is not None:
        signed = sign(
            method="GET", host=host, path=path, headers=headers, credentials=credentials, region=region
        )
        headers = signed.headers
        headers.pop("host")  # urllib sends it from the URL
    url = urlunsplit((scheme, host, canonical_path(path), "", ""))
    # S3 answers a wrong region with a redirect; following it would resend the signature elsewhere.
    return _Request(url, headers, follow_redirects=False)


def _secret(directory: Path, name: str) -> str | None:
    path = directory / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FetchError(f"{path}: unreadable ({exc.strerror})") from None
    return value or None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _download(request: _Request, dest: Path, *, sha256: str, uri: str, options: FetchOptions) -> int:
    handlers: list[urllib.request.BaseHandler] = [] if request.follow_redirects else [_NoRedirect()]
    opener = urllib.request.build_opener(*handlers)
    for attempt in range(1, options.attempts + 1):
        req = urllib.request.Request(request.url, headers={"User-Agent": "fpgaserve-storage-init"})
        for name, value in request.headers.items():
            req.add_unredirected_header(name, value)  # not carried over to a redirect's target
        try:
            with opener.open(req, timeout=options.timeout_s) as response:
                chunks = iter(lambda: response.read(_CHUNK), b"")
                return _stream(chunks, dest, sha256=sha256, uri=uri, options=options)
        except urllib.error.HTTPError as exc:
            detail = _s3_error(exc) if uri.startswith("s3://") else ""
            message = f"{redact(uri)}: HTTP {exc.code} {exc.reason}{detail}"
            if exc.code in (301, 302, 307, 308) and uri.startswith("s3://"):
                message += (
                    " (the bucket is in another region: set AWS_REGION in the credentials, or --endpoint)"
                )
            if exc.code not in _RETRIABLE or attempt == options.attempts:
                raise FetchError(message) from None
            logger.warning("%s; retrying (%d/%d)", message, attempt, options.attempts)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            message = f"{redact(uri)}: cannot connect ({reason})"
            if attempt == options.attempts:
                raise FetchError(message) from None
            logger.warning("%s; retrying (%d/%d)", message, attempt, options.attempts)
        options.sleep(2.0 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _s3_error(exc: urllib.error.HTTPError) -> str:
    # Only the error code: S3's body may echo the string to sign and the access key id.
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
    code = re.search(r"<Code>([A-Za-z]+)</Code>", body)
    return f" ({code.group(1)})" if code else ""
