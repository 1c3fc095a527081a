"""The gRPC port of the inference server: OIP v2, TF Serving's PredictionService and gRPC health.

Role: ``server_main.serve`` starts it beside the HTTP site when ``--grpc-port`` is given, in the
same process and event loop (``grpc.aio``), over the same ``DataPlane`` (so the same batcher),
``KeyStore`` (keys rotate without a restart), ``ServerMetrics`` and TLS certificate: with
``--tls-cert``/``--tls-key`` the port speaks TLS, and a rotated certificate is picked up for new
connections (``CertificateFetcher``, the gRPC twin of ``tls.CertificateReloader``). The standard
``grpc.health.v1.Health`` service answers without a key: SERVING once the model is ready,
NOT_SERVING while it loads and from SIGTERM on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaserve.server import grpc_tfserving, grpc_v2
from fpgaserve.server.auth import KeyStore
from fpgaserve.server.dataplane import DataPlane
from fpgaserve.server.grpc_common import GrpcServices
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.settings import ServerSettings
from fpgaserve.server.tls import TlsConfigError, build_ssl_context

__all__ = ["CertificateFetcher", "GrpcServer", "HealthServicer"]

logger = logging.getLogger(__name__)

SERVICES = (grpc_v2.SERVICE, grpc_tfserving.SERVICE)
_WATCH_INTERVAL_S = 0.5


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health`` over the data plane's state: "" and each served service."""

    def __init__(self, *, plane: DataPlane) -> None:
        self.plane = plane

    def _status(self, service: str) -> Any:
        if service and service not in SERVICES:
            return None
        serving = health_pb2.HealthCheckResponse.SERVING
        return serving if self.plane.ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(_WATCH_INTERVAL_S)


class CertificateFetcher:
    """The server certificate of the gRPC port, re-read when its files change.

    gRPC asks ``fetch`` (from its own threads) before each new handshake; it answers ``None``
    (keep the current pair) unless the files changed since the last look, at most every
    ``check_interval_s``. A changed pair that does not load is refused with a warning and the
    previous certificate stays, as on the HTTP port.
    """

    def __init__(self, *, cert_file: Path, key_file: Path, check_interval_s: float) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._ids = self._file_ids()
        self.initial = self._configuration()  # the files were checked by build_ssl_context already

    def _file_ids(self) -> tuple[tuple[int, int, int], ...]:
        ids = []
        for path in (self.cert_file, self.key_file):
            try:
                st = path.stat()  # follows the Secret volume's symlinks
            except OSError:
                ids.append((0, 0, 0))
            else:
                ids.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(ids)

    def _configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())]
        )

    def fetch(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self.check_interval_s
            ids = self._file_ids()
            if ids == self._ids:
                return None
            self._ids = ids
            try:
                build_ssl_context(cert_file=self.cert_file, key_file=self.key_file)  # refuses a bad pair
                configuration = self._configuration()
            except (TlsConfigError, OSError) as exc:
                logger.warning(
                    "TLS files changed but cannot be used (%s); keeping the previous certificate", exc
                )
                return None
            logger.info("TLS certificate %s reloaded for gRPC", self.cert_file)
            return configuration


class GrpcServer:
    """The gRPC server of one app; ``start`` returns the bound port, ``stop`` drains it."""

    def __init__(
        self,
        *,
        plane: DataPlane,
        settings: ServerSettings,
        metrics: ServerMetrics,
        keystore: KeyStore | None,
    ) -> None:
        self.settings = settings
        services = GrpcServices(plane=plane, settings=settings, metrics=metrics, keystore=keystore)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared
            ]
        )
        self.server.add_generic_rpc_handlers((grpc_v2.handler(services), grpc_tfserving.handler(services)))
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(plane=plane), self.server)

    async def start(self) -> int:
        settings = self.settings
        assert settings.grpc_port is not None
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                fetcher = CertificateFetcher(
                    cert_file=settings.tls_cert,
                    key_file=settings.tls_key,
                    check_interval_s=settings.tls_check_interval_s,
                )
                credentials = grpc.dynamic_ssl_server_credentials(fetcher.initial, fetcher.fetch)
                port = int(self.server.add_secure_port(address, credentials))
            else:
                port = int(self.server.add_insecure_port(address))
        except RuntimeError:  # grpcio's "Failed to bind": an OSError, so that `fpgaserve serve` says so
            port = 0
        if port == 0:
            raise OSError(
                f"cannot listen for gRPC on {address} (--grpc-port): the address is in use or invalid"
            )
        await self.server.start()
        logger.info("listening for gRPC%s on %s:%d", " (TLS)" if settings.tls else "", host, port)
        return port

    async def stop(self) -> None:
        """Refuse new calls, let calls in flight finish (up to the shutdown timeout)."""
        await self.server.stop(grace=self.settings.shutdown_timeout_s)
