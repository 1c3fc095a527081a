"""How the SDK reaches a web service that has no Ingress: a port-forward, or an address given.

Role: ``Webservice.run`` asks the workspace's ``connector`` for a local ``(host, port)`` that
leads to a ready pod of the service. ``PortForward`` (the default) opens the Kubernetes API's
port-forward to that pod through the kubernetes client and relays a local loopback port to it.
``DirectAddress`` is the explicit alternative for a pod you can already reach (a test running the
generated pod as local processes, a VPN into the pod network): pass it as
``Workspace(..., connector=DirectAddress(host, port))``. Either way TLS is verified against the
service's own certificate with the service's DNS name (``Webservice.run``), never turned off.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.stream import portforward

__all__ = ["Connector", "DirectAddress", "PortForward", "relay"]

logger = logging.getLogger(__name__)


class Connector(Protocol):
    """Yields a local (host, port) connected to ``port`` of ``pod`` for the block."""

    def connect(
        self, *, api_client: ApiClient, namespace: str, pod: str, port: int
    ) -> contextlib.AbstractContextManager[tuple[str, int]]: ...


@dataclass(frozen=True)
class DirectAddress:
    """A pod address reachable from here as is (no forwarding)."""

    host: str
    port: int

    @contextlib.contextmanager
    def connect(
        self, *, api_client: ApiClient, namespace: str, pod: str, port: int
    ) -> Iterator[tuple[str, int]]:
        yield self.host, self.port


def relay(a: Any, b: Any, *, stop: threading.Event) -> None:
    """Copy bytes both ways between two socket-like objects until one side closes."""
    pair = {a: b, b: a}
    while not stop.is_set():
        readable, _, _ = select.select(list(pair), [], [], 0.2)
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            pair[source].sendall(data)


class PortForward:
    """The Kubernetes API's port-forward to a pod, relayed from a loopback port (like
    ``kubectl port-forward``): one forward per accepted connection."""

    @contextlib.contextmanager
    def connect(
        self, *, api_client: ApiClient, namespace: str, pod: str, port: int
    ) -> Iterator[tuple[str, int]]:
        core = CoreV1Api(api_client)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        stop = threading.Event()

        def forward(client: socket.socket) -> None:
            try:
                stream = portforward(
                    core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
                remote = stream.socket(port)
                remote.setblocking(True)
                relay(client, remote, stop=stop)
                remote.close()
            except Exception as exc:  # one broken connection must not end the others
                logger.warning(
                    "port-forward to %s/%s:%d failed: %s", namespace, pod, port, type(exc).__name__
                )
            finally:
                client.close()

        def accept() -> None:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=forward, args=(client,), daemon=True).start()

        acceptor = threading.Thread(target=accept, name=f"port-forward-{pod}", daemon=True)
        acceptor.start()
        try:
            yield "127.0.0.1", int(listener.getsockname()[1])
        finally:
            stop.set()
            acceptor.join(timeout=5)
            listener.close()
