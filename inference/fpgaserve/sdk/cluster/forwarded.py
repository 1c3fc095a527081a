"""Scoring over a forwarded port with the certificate checked for the service's own DNS name.

Role: the transport of ``Webservice.score`` when there is no Ingress. A port-forward (or any
connector) hands out ``localhost:PORT``, but the server's certificate names
``NAME.NAMESPACE.svc``; the connection goes to the one while TLS verifies the other.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any

from fpgaserve.sdk.client import ScoringError

__all__ = ["post_score"]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address (a forwarded port) while verifying the certificate for another name."""

    def __init__(
        self, host: str, port: int, *, server_name: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name, self._ctx = server_name, context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._server_name)


def post_score(
    host: str,
    port: int,
    body: bytes,
    *,
    key: str | None,
    context: ssl.SSLContext | None,
    server_name: str,
    timeout: float,
) -> dict[str, Any]:
    """POST ``body`` to ``/score`` at ``host:port``; the JSON answer, or ScoringError naming the
    service and the HTTP status (the server's own error message, never the key)."""
    connection: http.client.HTTPConnection
    if context is not None:
        connection = _PinnedHTTPSConnection(
            host, port, server_name=server_name, context=context, timeout=timeout
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Content-Type": "application/octet-stream", "Host": server_name}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", "/score", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, ssl.SSLError) as exc:
        raise ScoringError(f"{server_name} via {host}:{port}: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        try:
            message = json.loads(data).get("error", response.reason)
        except ValueError:
            message = response.reason
        raise ScoringError(f"{server_name}: HTTP {response.status}: {message}", status=response.status)
    answer: dict[str, Any] = json.loads(data)
    return answer
