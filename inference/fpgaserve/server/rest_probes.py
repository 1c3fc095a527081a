"""Kubernetes probes: ``GET /healthz`` (the process serves) and ``GET /readyz`` (the model is ready).

Role: open routes (no key) that the pod's liveness and readiness probes call. ``/readyz`` answers
503 until the model is loaded and warmed up, and again from SIGTERM on, so that Kubernetes sends
traffic only to a server that can answer it.
"""

from __future__ import annotations

from aiohttp import web

from fpgaserve.api.serving import LIVENESS_PATH, READINESS_PATH
from fpgaserve.server.errors import error_response
from fpgaserve.server.rest_common import DATAPLANE_KEY

__all__ = ["healthz", "readyz", "routes"]


def routes() -> list[web.RouteDef]:
    return [web.get(LIVENESS_PATH, healthz), web.get(READINESS_PATH, readyz)]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    if not plane.ready:  # loading, failed, or draining (which still serves, but must not be sent more)
        # An answer, not an error: not raised through error_middleware, whose warning per 503 filled
        # the log with a line per probe while the model loaded (a failed load is logged where it fails).
        return error_response(503, plane.not_ready_reason(), headers={"Retry-After": "1"})
    runtime = plane.model()
    return web.json_response({"status": "ready", "model": runtime.name, "version": runtime.version})
