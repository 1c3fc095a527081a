"""Serves the device plugin on its unix socket and keeps it registered with the kubelet.

Role: the long-lived engine behind ``fpgaserve device-plugin``. It starts the gRPC server on
``<socket dir>/<resource>.sock``, calls ``Registration.Register`` on the kubelet's ``kubelet.sock``,
then polls (plain ``stat``, no inotify) for a kubelet restart: a restarted kubelet deletes every
socket in the directory, plugin sockets included, and creates a new ``kubelet.sock``. Either sign
makes the plugin serve a fresh socket and register again, by itself.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from concurrent import futures
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from fpgaserve.deviceplugin.health import HealthMonitor
from fpgaserve.deviceplugin.plugin import FpgaDevicePlugin
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.deviceplugin.v1beta1 import API_VERSION, KUBELET_SOCKET_NAME, api_pb2, api_pb2_grpc

__all__ = ["PluginServer", "RegistrationError", "check_resource_name", "serve_devices", "socket_name_for"]

logger = logging.getLogger(__name__)

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# Codes that mean "the kubelet is not (yet) there": try again on the next poll.
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class RegistrationError(Exception):
    """The kubelet refused the registration; the Device Plugin API says the plugin should exit."""


def check_resource_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is an extended resource name the kubelet accepts."""
    prefix, slash, short = name.partition("/")
    if (
        not slash
        or not _DNS_SUBDOMAIN.fullmatch(prefix)
        or len(prefix) > 253 - len("requests.")
        or not _NAME.fullmatch(short)
        or len(short) > 63
    ):
        raise ValueError(f"invalid resource name {name!r}: use DOMAIN/NAME, e.g. fpgaserve.io/fpga")
    if prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"):
        raise ValueError(
            f"invalid resource name {name!r}: the kubernetes.io domain is reserved; use your own"
        )


def socket_name_for(resource_name: str) -> str:
    """The plugin's socket file name: one per resource, so several plugins can share a node."""
    return resource_name.replace("/", "-") + ".sock"


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


class PluginServer:
    """One plugin's socket and its registration with the kubelet of this node."""

    def __init__(
        self,
        *,
        plugin: FpgaDevicePlugin,
        socket_dir: Path,
        resource_name: str,
        poll_interval: float = 1.0,
        register_timeout: float = 5.0,
    ) -> None:
        check_resource_name(resource_name)
        self.plugin = plugin
        self.socket_dir = socket_dir
        self.resource_name = resource_name
        self.poll_interval = poll_interval
        self.register_timeout = register_timeout
        self.socket_path = socket_dir / socket_name_for(resource_name)
        self.kubelet_socket = socket_dir / KUBELET_SOCKET_NAME
        self.registrations = 0  # successful Register calls, for logs and tests
        self._server: Any = None  # grpc.Server; grpc ships no types
        self._socket: tuple[int, int, int] | None = None  # identity of the socket file we created

    def run(self, stop: threading.Event) -> None:
        """Serve and stay registered until ``stop`` is set; raises ``RegistrationError``."""
        registered_with: tuple[int, int, int] | None = None
        waiting = False
        try:
            while not stop.is_set():
                kubelet = _identity(self.kubelet_socket)
                if kubelet is None:
                    if not waiting:
                        logger.info("waiting for the kubelet socket %s", self.kubelet_socket)
                        waiting = True
                    registered_with = None
                elif kubelet != registered_with or not self.socket_path.exists():
                    waiting = False
                    if self._serve_and_register():
                        # The identity seen before registering: if the kubelet was replaced meanwhile,
                        # the next poll notices and registers again (twice is harmless, never is not).
                        registered_with = kubelet
                stop.wait(self.poll_interval)
        finally:
            self.stop_serving()

    def _serve_and_register(self) -> bool:
        self.start_serving()
        try:
            self.register()
        except grpc.RpcError as exc:
            if exc.code() in _TRANSIENT:
                logger.warning(
                    "kubelet not reachable (%s); retrying in %.1fs", exc.code().name, self.poll_interval
                )
                return False
            raise RegistrationError(
                f"the kubelet refused to register {self.resource_name}: {exc.details()}"
            ) from None
        return True

    def start_serving(self) -> None:
        """(Re)start the gRPC server on a fresh socket file."""
        self.stop_serving()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fpga-plugin"))
        api_pb2_grpc.add_DevicePluginServicer_to_server(self.plugin, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server
        self._socket = _identity(self.socket_path)
        logger.info("serving %s on %s", self.resource_name, self.socket_path)

    def stop_serving(self) -> None:
        if self._server is None:
            return
        # A short grace lets an Allocate in flight finish; the kubelet's endless ListAndWatch stream
        # is then cancelled, and its callback wakes the thread waiting for the next change.
        self._server.stop(grace=0.1).wait()
        self._server = None
        # Only our own file: during a rollout the next plugin pod may already serve at this path.
        if self._socket is not None and _identity(self.socket_path) == self._socket:
            self.socket_path.unlink(missing_ok=True)
        self._socket = None

    def register(self) -> None:
        """Tell the kubelet about our socket; it dials back before answering."""
        request = api_pb2.RegisterRequest(
            version=API_VERSION,
            endpoint=self.socket_path.name,
            resource_name=self.resource_name,
            options=self.plugin.options(),
        )
        with grpc.insecure_channel(f"unix:{self.kubelet_socket}") as channel:
            stub = api_pb2_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
            stub.Register(request, timeout=self.register_timeout)
        self.registrations += 1
        logger.info(
            "registered %s with the kubelet (registration #%d)", self.resource_name, self.registrations
        )


def serve_devices(
    *,
    store: DeviceStore,
    socket_dir: Path,
    resource_name: str,
    health_interval: float,
    stop: threading.Event,
    host_state_dir: PurePosixPath | None = None,
    poll_interval: float = 1.0,
) -> None:
    """Run the plugin for the devices in ``store`` until ``stop`` is set."""
    monitor = HealthMonitor(store=store, interval=health_interval)
    monitor.start()
    try:
        plugin = FpgaDevicePlugin(monitor=monitor, host_state_dir=host_state_dir or PurePosixPath(store.root))
        PluginServer(
            plugin=plugin, socket_dir=socket_dir, resource_name=resource_name, poll_interval=poll_interval
        ).run(stop)
    finally:
        monitor.close()
