"""Prometheus metrics of one server: collectors on a per-app registry, a timing middleware, /metrics.

Role: ``web_app.make_app`` creates one ``ServerMetrics`` per application (never the global
registry, so that two apps in one process, e.g. in tests, count separately); the batcher and the
data plane record batch sizes, queue depth and modeled device time into it; ``metrics_middleware``
records every request by route template and status; ``grpc_common`` records every gRPC call
beside them by method and status code.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = ["METRICS_KEY", "ServerMetrics", "metrics_handler", "metrics_middleware"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DEVICE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class ServerMetrics:
    """Every collector the server exports, registered on ``registry``."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("route", "method", "status")
        self.requests = Counter(
            "fpgaserve_requests", "HTTP requests answered, by route template and status", labels, registry=r
        )
        self.request_seconds = Histogram(
            "fpgaserve_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "fpgaserve_batch_size",
            "Inputs per batch run on the model",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "fpgaserve_batch_duration_seconds",
            "Wall time of one batch in the runtime (worker thread)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prepare_seconds = Histogram(
            "fpgaserve_batch_prepare_seconds",
            "Wall time of one batch's host step (decode, resize) in the prepare thread, beside the "
            "previous batch's device step; staged runtimes only",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "fpgaserve_queue_wait_seconds",
            "Time an input waited for its batch to start",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("fpgaserve_queue_depth", "Inputs waiting for a batch", registry=r)
        self.inflight = Gauge("fpgaserve_inflight_inputs", "Inputs accepted and not yet answered", registry=r)
        self.device_seconds = Counter(
            "fpgaserve_device_seconds", "Modeled FPGA time of all batches", registry=r
        )
        self.batch_device_seconds = Histogram(
            "fpgaserve_batch_device_seconds",
            "Modeled FPGA time of one batch",
            buckets=_DEVICE_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("fpgaserve_inputs", "Inputs run on the model", registry=r)
        self.rejected = Counter(
            "fpgaserve_rejected_inputs",
            "Inputs refused before reaching the model (queue_full, timeout)",
            ("reason",),
            registry=r,
        )
        self.model_ready = Gauge(
            "fpgaserve_model_ready", "1 once the model is loaded and warmed up", registry=r
        )
        self.auth_failures = Counter(
            "fpgaserve_auth_failures", "Requests refused for a missing or wrong key", registry=r
        )
        grpc_labels = ("method", "code")
        self.grpc_requests = Counter(
            "fpgaserve_grpc_requests",
            "gRPC calls answered, by full method name and status code",
            grpc_labels,
            registry=r,
        )
        self.grpc_request_seconds = Histogram(
            "fpgaserve_grpc_request_duration_seconds",
            "Time to answer a gRPC call, by full method name and status code",
            grpc_labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method, str(status)).observe(seconds)

    def observe_grpc(self, *, method: str, code: str, seconds: float) -> None:
        self.grpc_requests.labels(method, code).inc()
        self.grpc_request_seconds.labels(method, code).observe(seconds)


METRICS_KEY = web.AppKey("metrics", ServerMetrics)


def _route_label(request: web.Request) -> str:
    # The route template, never the raw path: raw paths would make unbounded label values.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request; errors are JSON responses by now (``error_middleware`` runs inside)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a non-error HTTPException passed through
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's code for it)
        raise
    finally:
        request.app[METRICS_KEY].observe_request(
            route=_route_label(request),
            method=request.method,
            status=status,
            seconds=time.perf_counter() - start,
        )


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text exposition of this app's registry."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
