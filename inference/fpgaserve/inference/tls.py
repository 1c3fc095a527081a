"""TLS for the server's one port: a server-side SSL context that speaks TLS 1.2 or newer.

Role: ``server_main`` builds the context from ``--tls-cert``/``--tls-key`` (the mounted Secret) and
hands it to ``web.TCPSite``. Errors name the file and say what to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsConfigError", "build_ssl_context"]


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
