"""The aiohttp application of the inference server: ``make_app(*, runtime, settings)``.

Role: assembles the server without starting it (``server_main`` listens; tests drive it through
``aiohttp_client``). Middlewares, outermost first: metrics (sees every final status), errors (the
one place errors become JSON), auth. The model's life is a cleanup context: a runtime object is
warmed up before the app starts; a loader (``fpgaserve serve``) runs in the background so that the
probes answer while it loads, and ``/readyz`` turns ready when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from fpgaserve.api.serving import LIVENESS_PATH, METRICS_PATH, READINESS_PATH
from fpgaserve.runtime.protocol import ModelRuntime
from fpgaserve.server import openapi, rest_probes, rest_score, rest_tfserving, rest_v2
from fpgaserve.server.auth import KEYSTORE_KEY, KeyStore, make_auth_middleware
from fpgaserve.server.dataplane import DataPlane, RuntimeSource
from fpgaserve.server.errors import error_middleware
from fpgaserve.server.metrics import METRICS_KEY, ServerMetrics, metrics_handler, metrics_middleware
from fpgaserve.server.rest_common import DATAPLANE_KEY, SETTINGS_KEY
from fpgaserve.server.settings import ServerSettings

__all__ = ["LOAD_TASK_KEY", "OPEN_PATHS", "make_app"]

logger = logging.getLogger(__name__)

# Routes that answer without a key: probes (the kubelet has none), metrics (Prometheus), the API doc.
OPEN_PATHS = frozenset(
    {LIVENESS_PATH, READINESS_PATH, METRICS_PATH, openapi.OPENAPI_PATH, "/v2/health/live", "/v2/health/ready"}
)

LOAD_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("load_task")
_SOURCE_KEY: web.AppKey[RuntimeSource] = web.AppKey("runtime_source")


def make_app(*, runtime: RuntimeSource, settings: ServerSettings) -> web.Application:
    """The server's application, serving ``runtime`` (a loaded runtime, or a loader to call)."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, make_auth_middleware(open_paths=OPEN_PATHS)],
        # The body limit is enforced in rest_common.read_body with a clearer message; this one is
        # aiohttp's own backstop for any reader.
        client_max_size=settings.max_body_bytes,
    )
    metrics = ServerMetrics()
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[DATAPLANE_KEY] = DataPlane(settings=settings, metrics=metrics)
    app[_SOURCE_KEY] = runtime
    if settings.keys_file is not None:
        # Read now: a missing or malformed keys file must stop the server before it listens.
        app[KEYSTORE_KEY] = KeyStore(path=settings.keys_file, check_interval_s=settings.keys_check_interval_s)
    app.cleanup_ctx.append(_model_context)
    routes = [
        *rest_probes.routes(),
        web.get(METRICS_PATH, metrics_handler),
        *openapi.routes(),
        *rest_score.routes(),
        *rest_v2.routes(),
        *rest_tfserving.routes(),
    ]
    app.add_routes(routes)
    return app


async def _model_context(app: web.Application) -> AsyncIterator[None]:
    plane = app[DATAPLANE_KEY]
    source = app[_SOURCE_KEY]
    if isinstance(source, ModelRuntime):
        await plane.load(source)  # already loaded: warm up before the app takes requests
        task: asyncio.Task[None] | None = None
    else:
        task = asyncio.get_running_loop().create_task(plane.load(source), name="fpgaserve-load")
        app[LOAD_TASK_KEY] = task
    yield
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task  # a load failure was logged where it happened
    await plane.close()
