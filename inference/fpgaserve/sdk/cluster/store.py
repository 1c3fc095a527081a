"""The package store: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...) that holds packages.

Role: ``Model.register`` uploads a ``service_def.zip`` here under a content-addressed key
(``<prefix>/<sha256>/service_def.zip``) and ``Model.download`` reads it back; the FpgaModel then
points at ``s3://bucket/key`` with the store's endpoint and a reader Secret. Requests are signed
with ``fpgaserve.api.sigv4`` over the standard library's HTTP client (no boto3). Credentials never
appear in a repr, a log line or an error.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fpgaserve.api.sigv4 import EMPTY_SHA256, Credentials, canonical_path, sign

__all__ = ["PackageStore", "StoreError", "package_key"]

_CHUNK = 1024 * 1024


class StoreError(RuntimeError):
    """The store refused or could not be reached (the message names the operation and the status)."""


def package_key(sha256: str, *, prefix: str = "packages") -> str:
    """The content-addressed key of a package: the same bytes always land at the same key."""
    return (
        f"{prefix.strip('/')}/{sha256}/service_def.zip" if prefix.strip("/") else f"{sha256}/service_def.zip"
    )


@dataclass(frozen=True)
class PackageStore:
    """A bucket on an S3-compatible endpoint (path-style addressing), with its credentials.

    ``endpoint`` None means AWS S3 in ``region``; ``ca_file`` verifies an endpoint with a private CA.
    """

    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    endpoint: str | None = None
    region: str = "us-east-1"
    prefix: str = "packages"
    ca_file: str | None = None

    @property
    def _base(self) -> tuple[str, str, str]:
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            return parts.scheme, parts.netloc, parts.path.rstrip("/")
        return "https", f"s3.{self.region}.amazonaws.com", ""

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def reader_secret_data(self) -> dict[str, str]:
        """The files storage-init and the operator read from a reader Secret (``AWS_*``)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
        }

    # -- operations ----------------------------------------------------------------------------

    def create_bucket(self) -> None:
        """Create the bucket (an existing one of ours is fine)."""
        status, body = self._request(
            "PUT", f"/{self.bucket}", what=f"create bucket {self.bucket}", ok=(200, 409)
        )
        if status == 409 and b"BucketAlreadyOwnedByYou" not in body:
            raise StoreError(f"create bucket {self.bucket}: 409: {_s3_code(body)}")

    def exists(self, key: str) -> bool:
        status, _ = self._request("HEAD", f"/{self.bucket}/{key}", what=f"head {key}", ok=(200, 404))
        return status == 200

    def upload(self, path: Path, key: str) -> None:
        """PUT the file (its sha256 signed, so the store rejects a corrupted body)."""
        data = path.read_bytes()
        self._request("PUT", f"/{self.bucket}/{key}", what=f"upload {key}", body=data)

    def download(self, key: str, dest: Path, *, sha256: str | None = None) -> Path:
        """GET the object into ``dest``; with ``sha256``, check it before keeping the file."""
        _, data = self._request("GET", f"/{self.bucket}/{key}", what=f"download {key}")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"download {key}: the content does not match its sha256")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
        return dest

    def delete(self, key: str) -> None:
        self._request("DELETE", f"/{self.bucket}/{key}", what=f"delete {key}", ok=(200, 204, 404))

    # -- transport -----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: bytes = b"",
        ok: tuple[int, ...] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        scheme, host, base = self._base
        full = base + path
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        signed = sign(
            method=method, host=host, path=full, headers={"x-amz-content-sha256": payload, **(headers or {})},
            payload_sha256=payload, credentials=Credentials(self.access_key_id, self.secret_access_key),
            region=self.region,
        ).headers  # fmt: skip
        connection: http.client.HTTPConnection
        if scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            connection = http.client.HTTPSConnection(host, timeout=60, context=context)
        else:
            connection = http.client.HTTPConnection(host, timeout=60)
        try:
            connection.request(method, canonical_path(full), body=body or None, headers=signed)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise StoreError(f"{what}: {host} unreachable: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        if response.status not in ok:
            raise StoreError(f"{what}: {response.status} {response.reason}: {_s3_code(data)}")
        return response.status, data


def _s3_code(body: bytes) -> str:
    """The <Code> of an S3 error document (never its whole text, which may echo the request)."""
    text = body.decode("utf-8", "replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    return text[start + 6 : end] if 0 <= start < end else "no error code"
