"""Key authentication: ``Authorization: Bearer <key>`` against a primary and a secondary key.

Role: ``KeyStore`` reads the mounted keys file (``{"primaryKey": ..., "secondaryKey": ...}``) and
re-reads it when it changes, so keys rotate without a restart. Kubernetes updates a Secret volume
by swapping a ``..data`` symlink to a new directory: the path stays, the file behind it is new, so
the store compares the identity (device, inode, size, mtime) of the file the path resolves to.
``auth_middleware`` guards every route except the open ones (probes, metrics, the API document);
``authenticate`` is the check itself, a function of the header value, for any face (REST, gRPC).
Keys are never logged; comparisons are constant-time.

Revoking a key means rotating it: the Secret gets new values and the old ones stop working at the
next check. A keys file that becomes missing, empty or has no key after start revokes every key
(requests get 503 until a usable file appears): keeping the old keys then would keep a key valid
that an administrator meant to remove. A file that is merely malformed (a half-written update)
keeps the previous keys, with a warning.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from fpgaserve.server.errors import ModelNotReady, Unauthorized
from fpgaserve.server.metrics import METRICS_KEY

__all__ = [
    "KEYSTORE_KEY",
    "KeyFileError",
    "KeyStore",
    "KeysUnavailable",
    "authenticate",
    "make_auth_middleware",
]

logger = logging.getLogger(__name__)


class KeyFileError(ValueError):
    """The keys file is missing, unreadable or malformed (the message never contains a key).

    ``revokes``: the file is gone or holds no key, so no previous key may stay valid.
    """

    def __init__(self, message: str, *, revokes: bool = False) -> None:
        super().__init__(message)
        self.revokes = revokes


class KeysUnavailable(Exception):
    """No key is valid now: the keys file went missing or empty after start."""


_FileId = tuple[int, int, int, int]


def _read_keys(path: Path) -> tuple[bytes, ...]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"keys file {path} does not exist", revokes=True) from None
    except OSError as exc:
        raise KeyFileError(f"keys file {path} is unreadable: {exc.strerror}") from None
    if not raw.strip():
        raise KeyFileError(f"keys file {path} is empty", revokes=True)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise KeyFileError(f"keys file {path} is not JSON") from None
    if not isinstance(document, dict):
        raise KeyFileError(f'keys file {path} must hold {{"primaryKey": ..., "secondaryKey": ...}}')
    keys: list[bytes] = []
    for field in ("primaryKey", "secondaryKey"):
        value = document.get(field)
        if value is None or value == "":
            continue  # a missing secondary key is fine; an empty key must never match
        if not isinstance(value, str):
            raise KeyFileError(f"keys file {path}: {field} must be a string")
        keys.append(value.encode())
    if not keys:
        raise KeyFileError(f"keys file {path} has neither primaryKey nor secondaryKey", revokes=True)
    return tuple(keys)


class KeyStore:
    """The current keys of one server, reloaded from ``path`` when its file changes.

    The file is stat-ed at most every ``check_interval_s``. A changed file that is malformed keeps
    the previous keys (with a warning) until the file changes again; one that is missing or holds no
    key revokes them all (``check`` raises ``KeysUnavailable``) until a usable file appears.
    """

    def __init__(self, *, path: Path, check_interval_s: float = 1.0) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self._keys: tuple[bytes, ...] = ()
        self._file_id: _FileId | None = None
        self._next_check = 0.0
        self.reload(force=True)

    def _stat(self) -> _FileId | None:
        try:
            st = os.stat(self.path)  # follows the symlinks, to the file currently behind them
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); return whether the keys were replaced.

        With ``force``, an unreadable file raises ``KeyFileError`` (start-up fails fast).
        """
        file_id = self._stat()
        if not force and file_id == self._file_id:
            return False
        try:
            keys = _read_keys(self.path)
        except KeyFileError as exc:
            if force:
                raise
            # Remember the broken file too: warn once per change, not at every check.
            self._file_id = file_id
            if exc.revokes:
                changed = bool(self._keys)
                self._keys = ()
                logger.warning("%s; every key is revoked until a usable keys file appears", exc)
                return changed
            logger.warning("%s; keeping the previous keys", exc)
            return False
        changed = keys != self._keys
        self._keys, self._file_id = keys, file_id
        if changed and not force:
            logger.info("keys file %s changed: %d key(s) loaded", self.path, len(keys))
        return True

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self.reload()

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries a current key.

        ``KeysUnavailable`` when no key is valid at all (the keys file went missing or empty).
        """
        self._maybe_reload()
        if not self._keys:
            raise KeysUnavailable(f"no valid key: the keys file {self.path} is missing or empty")
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            presented = token.strip().encode("utf-8")
        except UnicodeEncodeError:
            # aiohttp decodes header bytes that are not UTF-8 to lone surrogates; no key has them.
            return False
        # Compare with every key, always: which key matched must not show in the timing.
        matches = [hmac.compare_digest(presented, key) for key in self._keys]
        return bool(presented) and any(matches)


KEYSTORE_KEY = web.AppKey("keystore", KeyStore)


def authenticate(store: KeyStore, authorization: str | None) -> None:
    """Return if ``authorization`` (an ``Authorization`` header value) carries a current key.

    ``Unauthorized`` (401) naming what to send, or ``ModelNotReady`` (503) when no key is valid at
    all. Never puts the presented value in the message.
    """
    try:
        if store.check(authorization):
            return
    except KeysUnavailable:
        raise ModelNotReady(
            "the server has no valid key (its keys file is missing or empty); retry after the keys "
            "are rotated in"
        ) from None
    if not authorization:
        raise Unauthorized("missing key: send the header 'Authorization: Bearer <key>'")
    raise Unauthorized("invalid key: send 'Authorization: Bearer <key>' with a current key")


def make_auth_middleware(*, open_paths: Collection[str]) -> Middleware:
    """A middleware that refuses requests without a current key, except on ``open_paths``."""
    open_set = frozenset(open_paths)

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        store = request.app.get(KEYSTORE_KEY)
        if store is None or request.path in open_set:
            return await handler(request)
        try:
            authenticate(store, request.headers.get("Authorization"))
        except (Unauthorized, ModelNotReady):
            request.app[METRICS_KEY].auth_failures.inc()
            raise
        return await handler(request)

    return auth_middleware
