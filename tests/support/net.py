"""A free TCP port on loopback, for servers a test starts as processes (which must be told a port)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port nothing listens on now. Another process could take it before the server binds it; in
    tests that start one server at a time on loopback that race is not worth a retry loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
