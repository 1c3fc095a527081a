"""AWS Signature Version 4 for S3 requests, with hmac and hashlib alone.

Role: signs the requests that ``storage-init`` (the GET) and the operator (a HEAD and ranged GETs of a package manifest) send to S3 or an S3-compatible store (MinIO...). The
S3 flavour: the path is URI-encoded once, as given (no normalisation); the payload hash is signed
(and, for S3, sent as ``x-amz-content-sha256``). Tested against AWS's published examples.
Credentials never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "Credentials",
    "SignedRequest",
    "canonical_path",
    "canonical_query",
    "sign",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    """An access key pair (and session token); the secret parts are left out of ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SignedRequest:
    headers: dict[str, str]  # every header to send, Authorization included
    canonical_request: str
    string_to_sign: str
    signature: str


def _encode(value: str, *, safe: str = "") -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX of its UTF-8 bytes.
    return quote(value, safe=safe + "-_.~")


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    pairs = sorted((_encode(k), _encode(v)) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, *, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_access_key}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    credentials: Credentials,
    region: str,
    service: str = "s3",
    now: datetime | None = None,
) -> SignedRequest:
    """Sign a request; ``path`` is the decoded path (e.g. ``/bucket/my key``), encoded here once.

    ``headers`` are signed as given (plus ``host``, ``x-amz-date`` and the session token); for S3,
    include ``x-amz-content-sha256``. The request must be sent to ``_encode(path)`` with the
    returned headers.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    signed = {"host": host, "x-amz-date": amz_date}
    for name, value in (headers or {}).items():
        signed[name.lower()] = value
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names)
    signed_headers = ";".join(names)
    canonical = "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query(query),
            canonical_headers,
            signed_headers,
            payload_sha256,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(credentials.secret_access_key, date=date, region=region, service=service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return SignedRequest(
        headers={**signed, "authorization": authorization},
        canonical_request=canonical,
        string_to_sign=string_to_sign,
        signature=signature,
    )


def canonical_path(path: str) -> str:
    """S3's canonical URI: each segment encoded once, slashes kept."""
    return _encode(path or "/", safe="/")
