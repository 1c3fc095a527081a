"""Run the inference server: listen (HTTP(S), and gRPC with --grpc-port), serve until SIGTERM, drain.

Role: what ``fpgaserve serve`` calls after parsing its command line. ``AppRunner`` + ``TCPSite``
keep the app apart from its listener (``connections.GuardedAppRunner``: header timeout, connection
cap, quiet parser errors). On SIGTERM or SIGINT the server turns unready but keeps accepting and
serving for ``drain_s`` (the endpoints controller and proxies take a moment to stop sending: closing
the port at once resets the requests they still send), then stops accepting, lets in-flight requests
finish (up to ``shutdown_timeout_s``), closes the model and device and returns. A second signal ends
the drain period early. A model that fails to load ends the process with status 1, or 2 when the
load refused its input (a ``UserError``: a malformed package).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from fpgaserve.api.errors import UserError
from fpgaserve.server.auth import KEYSTORE_KEY
from fpgaserve.server.connections import ConnectionLimits, GuardedAppRunner
from fpgaserve.server.dataplane import RuntimeSource
from fpgaserve.server.metrics import METRICS_KEY
from fpgaserve.server.rest_common import DATAPLANE_KEY
from fpgaserve.server.settings import ServerSettings
from fpgaserve.server.tls import CertificateReloader, build_ssl_context
from fpgaserve.server.web_app import LOAD_TASK_KEY, make_app

__all__ = ["GIL_SWITCH_INTERVAL_S", "run", "serve"]

logger = logging.getLogger(__name__)


async def serve(
    *, runtime: RuntimeSource, settings: ServerSettings, stop: asyncio.Event | None = None
) -> int:
    """Serve until ``stop`` is set (by default: SIGTERM/SIGINT); return the exit status."""
    ssl_context = (
        build_ssl_context(cert_file=settings.tls_cert, key_file=settings.tls_key)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    app = make_app(runtime=runtime, settings=settings)
    access_log = logging.getLogger("aiohttp.access") if logger.isEnabledFor(logging.DEBUG) else None
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s, max_connections=settings.max_connections
    )
    runner = GuardedAppRunner(
        app, limits=limits, shutdown_timeout=settings.shutdown_timeout_s, access_log=access_log
    )
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    status = 0
    reload_task: asyncio.Task[None] | None = None
    grpc_server = None
    await runner.setup()
    try:
        if settings.grpc_port is not None:
            # Imported only when asked for: grpc.aio and the protocol descriptors are not free.
            from fpgaserve.server.grpc_server import GrpcServer

            grpc_server = GrpcServer(
                plane=app[DATAPLANE_KEY],
                settings=settings,
                metrics=app[METRICS_KEY],
                keystore=app.get(KEYSTORE_KEY),
            )
            await grpc_server.start()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        for address in runner.addresses:
            host, port = address[0], address[1]
            logger.info("listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, port)
        if ssl_context is not None and settings.tls_cert is not None and settings.tls_key is not None:
            reloader = CertificateReloader(
                ssl_context, cert_file=settings.tls_cert, key_file=settings.tls_key
            )
            reload_task = loop.create_task(reloader.watch(settings.tls_check_interval_s))
        waiters: list[asyncio.Future[Any]] = [loop.create_task(stop.wait())]
        load_task = app.get(LOAD_TASK_KEY)
        if load_task is not None:
            waiters.append(load_task)
        while True:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if load_task is not None and load_task in done:
                failure = None if load_task.cancelled() else load_task.exception()
                if failure is not None:
                    logger.error("stopping: the model failed to load")
                    status = 2 if isinstance(failure, UserError) else 1  # 2: the package was refused
                    break
                waiters.remove(load_task)
                load_task = None
                continue
            break
        for waiter in waiters:
            waiter.cancel()
        if status == 0:
            await _drain(app, stop=stop, drain_s=settings.drain_s)
            logger.info("stopping: draining in-flight requests (up to %g s)", settings.shutdown_timeout_s)
    finally:
        if reload_task is not None:
            reload_task.cancel()
        app[DATAPLANE_KEY].drain()
        if grpc_server is not None:
            await grpc_server.stop()  # before the data plane closes: its calls in flight finish
        await runner.cleanup()
        logger.info("stopped")
    return status


async def _drain(app: web.Application, *, stop: asyncio.Event, drain_s: float) -> None:
    """Unready, still serving, for ``drain_s`` seconds (or until a second signal)."""
    app[DATAPLANE_KEY].drain()
    if drain_s <= 0:
        return
    logger.info("stopping: not ready; still serving for %g s (--drain-s) while traffic moves away", drain_s)
    stop.clear()  # a second SIGTERM/SIGINT sets it again and ends the drain period early
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), drain_s)


# The GIL switch interval of the server process. CPython's default (5 ms) lets the event loop,
# encoding a burst of answers, keep the batch worker waiting up to 5 ms at each of its returns to
# Python between kernels; 1 ms gives the device back sooner at a negligible switching cost.
GIL_SWITCH_INTERVAL_S = 0.001


def run(*, runtime: RuntimeSource, settings: ServerSettings, exit_process: bool = False) -> int:
    """Blocking entry point (owns the process): a fresh event loop, ``serve``, the exit status.

    With ``exit_process`` the process ends right here once everything is closed: the interpreter's
    own teardown (TensorFlow's and numba's finalizers, idle pool threads) took seconds after the
    server said it stopped, which the kubelet counts against the grace period.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    status = 130
    with contextlib.suppress(KeyboardInterrupt):
        status = asyncio.run(serve(runtime=runtime, settings=settings))
    if exit_process:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
