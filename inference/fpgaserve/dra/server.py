"""Serves the DRA driver's two sockets, keeps it registered, and keeps its ResourceSlice current.

Role: the long-lived engine behind ``fpgaserve dra-driver``. It serves ``DRAPlugin`` on
``<plugin dir>/dra.sock`` and ``Registration`` on ``<registry dir>/<driver>-reg.sock``, where the
kubelet's plugin watcher finds it (and dials in: registration is the kubelet's move). A poll loop
(plain ``stat``, no inotify) serves a socket again if its file disappears (a kubelet restart can
clean the directories), and publishes the slice whenever the health monitor's snapshot moves; a
failed publish is retried on the next poll.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from fpgaserve.deviceplugin.health import HealthMonitor
from fpgaserve.dra.pluginregistration import api_pb2_grpc as reg_grpc
from fpgaserve.dra.publisher import SlicePublisher
from fpgaserve.dra.service import DraService, RegistrationService
from fpgaserve.dra.v1 import api_pb2_grpc

__all__ = ["DriverServer", "registration_socket_name"]

logger = logging.getLogger(__name__)

DRA_SOCKET_NAME = "dra.sock"


def registration_socket_name(driver: str) -> str:
    return f"{driver}-reg.sock"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class _Socket:
    """One gRPC server on one unix socket file, restartable."""

    def __init__(self, *, path: Path, add: Any, servicer: Any) -> None:
        self.path = path
        self._add = add
        self._servicer = servicer
        self._server: Any = None
        self._identity: tuple[int, int] | None = None

    @property
    def healthy(self) -> bool:
        return self._server is not None and _identity(self.path) == self._identity

    def start(self) -> None:
        self.stop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fpga-dra"))
        self._add(self._servicer, server)
        server.add_insecure_port(f"unix:{self.path}")
        server.start()
        self._server = server
        self._identity = _identity(self.path)
        logger.info("serving %s", self.path)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop(grace=0.5).wait()
        self._server = None
        # Only our own file: during a rollout the next driver pod may already serve at this path.
        if self._identity is not None and _identity(self.path) == self._identity:
            self.path.unlink(missing_ok=True)
        self._identity = None


class DriverServer:
    """The driver's sockets and slice publishing for one node."""

    def __init__(
        self,
        *,
        driver: str,
        dra: DraService,
        monitor: HealthMonitor,
        publisher: SlicePublisher,
        plugin_dir: Path,
        registry_dir: Path,
        poll_interval: float = 1.0,
    ) -> None:
        self.driver = driver
        self.monitor = monitor
        self.publisher = publisher
        self.poll_interval = poll_interval
        self.dra_socket = plugin_dir / DRA_SOCKET_NAME
        self.registration = RegistrationService(driver=driver, endpoint=str(self.dra_socket))
        self.registration_socket = registry_dir / registration_socket_name(driver)
        self._sockets = [
            _Socket(path=self.dra_socket, add=api_pb2_grpc.add_DRAPluginServicer_to_server, servicer=dra),
            _Socket(
                path=self.registration_socket,
                add=reg_grpc.add_RegistrationServicer_to_server,
                servicer=self.registration,
            ),
        ]
        self.published_version: int | None = None

    def publish_if_changed(self) -> None:
        snapshot = self.monitor.snapshot()
        if snapshot.version == self.published_version:
            return
        try:
            self.publisher.publish(snapshot.devices)
        except Exception as exc:  # the API server away or refusing: keep serving, retry next poll
            logger.warning("cannot publish the ResourceSlice (retrying): %s", exc)
            return
        self.published_version = snapshot.version

    def run(self, stop: threading.Event) -> None:
        """Serve and publish until ``stop`` is set."""
        try:
            # The DRA socket first: the kubelet may call it as soon as it sees the registration socket.
            for sock in self._sockets:
                sock.start()
            while not stop.is_set():
                for sock in self._sockets:
                    if not sock.healthy:
                        logger.warning("%s disappeared; serving it again", sock.path)
                        sock.start()
                self.publish_if_changed()
                stop.wait(self.poll_interval)
        finally:
            for sock in reversed(self._sockets):
                sock.stop()
