"""TLS for the server's one port: a server-side SSL context that speaks TLS 1.2 or newer.

Role: ``server_main`` builds the context from ``--tls-cert``/``--tls-key`` (the mounted Secret) and
hands it to ``web.TCPSite``. Errors name the file and say what to fix. ``CertificateReloader``
keeps that context current when the Secret rotates (cert-manager renewing it, or an operator
update): Kubernetes swaps the files behind the same paths, and new handshakes get the new pair.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

__all__ = ["CertificateReloader", "TlsConfigError", "build_ssl_context"]

logger = logging.getLogger(__name__)
_FileId = tuple[int, int, int, int]


class TlsConfigError(ValueError):
    """The certificate or key cannot be used."""


def build_ssl_context(*, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context with the certificate chain and key loaded; TLS < 1.2 is refused."""
    for what, path in (("certificate", cert_file), ("key", key_file)):
        if not path.is_file():
            raise TlsConfigError(f"TLS {what} file {path} does not exist")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"cannot use TLS certificate {cert_file} with key {key_file}: {exc.reason or exc}; "
            "both must be PEM and the key must match the certificate"
        ) from None
    return context


def _file_id(path: Path) -> _FileId | None:
    try:
        st = os.stat(path)  # follows the Secret volume's symlinks to the file currently behind them
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CertificateReloader:
    """Reloads the certificate chain of a live server context when its files change.

    A changed pair is first loaded into a scratch context: a half-written or mismatched pair is
    refused with a warning (naming the files, never their contents), and the live context keeps
    serving the previous certificate until the files change again. Loading straight into the live
    context could leave it with a new certificate and no key.
    """

    def __init__(self, context: ssl.SSLContext, *, cert_file: Path, key_file: Path) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self._ids = self._current_ids()

    def _current_ids(self) -> tuple[_FileId | None, _FileId | None]:
        return (_file_id(self.cert_file), _file_id(self.key_file))

    def reload_if_changed(self) -> bool:
        """Load the pair again if either file changed since the last look; whether it was loaded."""
        ids = self._current_ids()
        if ids == self._ids:
            return False
        self._ids = ids  # a broken pair is reported once per change, not at every check
        try:
            build_ssl_context(cert_file=self.cert_file, key_file=self.key_file)
            self.context.load_cert_chain(certfile=str(self.cert_file), keyfile=str(self.key_file))
        except (TlsConfigError, ssl.SSLError, OSError) as exc:
            logger.warning("TLS files changed but cannot be used (%s); keeping the previous certificate", exc)
            return False
        logger.info("TLS certificate %s reloaded", self.cert_file)
        return True

    async def watch(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(max(interval_s, 0.05))
            self.reload_if_changed()
