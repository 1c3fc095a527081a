"""Run the inference server: listen (HTTP(S), and gRPC with --grpc-port), serve until SIGTERM, drain.

Role: what ``fpgaserve serve`` calls after parsing its command line. ``AppRunner`` + ``TCPSite``
keep the app apart from its listener: on SIGTERM or SIGINT the server turns unready, stops
accepting connections, lets in-flight requests finish (up to ``shutdown_timeout_s``), then closes
the model and device. A model that fails to load ends the process with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from fpgaserve.server.auth import KEYSTORE_KEY
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
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout_s, access_log=access_log)
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
                if not load_task.cancelled() and load_task.exception() is not None:
                    logger.error("stopping: the model failed to load")
                    status = 1
                    break
                waiters.remove(load_task)
                load_task = None
                continue
            logger.info("stopping: draining in-flight requests (up to %g s)", settings.shutdown_timeout_s)
            break
        for waiter in waiters:
            waiter.cancel()
    finally:
        if reload_task is not None:
            reload_task.cancel()
        app[DATAPLANE_KEY].drain()
        if grpc_server is not None:
            await grpc_server.stop()  # before the data plane closes: its calls in flight finish
        await runner.cleanup()
        logger.info("stopped")
    return status


# The GIL switch interval of the server process. CPython's default (5 ms) lets the event loop,
# encoding a burst of answers, keep the batch worker waiting up to 5 ms at each of its returns to
# Python between kernels; 1 ms gives the device back sooner at a negligible switching cost.
GIL_SWITCH_INTERVAL_S = 0.001


def run(*, runtime: RuntimeSource, settings: ServerSettings) -> int:
    """Blocking entry point (owns the process): a fresh event loop, ``serve``, the exit status."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(runtime=runtime, settings=settings))
    return 130
