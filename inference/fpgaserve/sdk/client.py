"""A small HTTP(S) client for deployed services: ``POST /score`` with a key.

Role: what ``LocalWebservice.run`` and ``fpgaserve score`` use to call any fpgaserve service (local,
port-forwarded or behind an Ingress). Standard library only. Keys are sent, never logged.
"""

from __future__ import annotations

import io
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

__all__ = ["ScoringError", "read_image_bytes", "score"]


class ScoringError(RuntimeError):
    """The service answered with an error (its JSON message is kept) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def read_image_bytes(image: bytes | str | Path | IO[Any]) -> bytes:
    """Bytes of an image given as bytes, a path, or an open file (binary, or text opened by name)."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | Path):
        return Path(image).read_bytes()
    if isinstance(image, io.TextIOBase):  # opened in text mode, as in the Brainwave article: reopen it
        return Path(image.name).read_bytes()
    return bytes(image.read())


def score(
    url: str,
    image: bytes | str | Path | IO[Any],
    *,
    key: str | None = None,
    cafile: str | Path | None = None,
    insecure: bool = False,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """POST one image to ``url`` (a service base URL or its ``/score`` URL); returns the JSON answer."""
    target = url.rstrip("/")
    if not target.endswith("/score"):
        target += "/score"
    request = urllib.request.Request(target, data=read_image_bytes(image), method="POST")
    request.add_header("Content-Type", "application/octet-stream")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    context = None
    if target.startswith("https://"):
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ScoringError(f"{target}: HTTP {exc.code}: {message}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ScoringError(f"{target}: {getattr(exc, 'reason', exc)}") from None
