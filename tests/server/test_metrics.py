"""Metrics: per-app registries, requests by route template and status, batches, queue, device time."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from fpgaserve.server.testing import FakeRuntime
from tests.server.helpers import MakeClient


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_requests_batches_and_device_time_are_counted(make_client: MakeClient, png: bytes) -> None:
    client = await make_client(FakeRuntime(device_seconds_per_item=0.001), max_batch_size=4)
    headers = {"Content-Type": "image/png"}
    responses = await asyncio.gather(*(client.post("/score", data=png, headers=headers) for _ in range(4)))
    assert [r.status for r in responses] == [200] * 4
    await client.get("/v2/models/nope")
    await client.get("/no/such/route")
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = _samples(await response.text())
    route = lambda path, status, method="GET": (("method", method), ("route", path), ("status", status))  # noqa: E731
    assert samples[("fpgaserve_requests_total", route("/score", "200", "POST"))] == 4
    assert samples[("fpgaserve_request_duration_seconds_count", route("/score", "200", "POST"))] == 4
    assert samples[("fpgaserve_requests_total", route("/v2/models/{name}", "404"))] == 1
    assert samples[("fpgaserve_requests_total", route("unmatched", "404"))] == 1
    # Four requests plus the warm-up batch of two; however batched, every input is counted once.
    assert samples[("fpgaserve_inputs_total", ())] == 6
    assert samples[("fpgaserve_batch_size_sum", ())] == 6
    assert samples[("fpgaserve_device_seconds_total", ())] == pytest.approx(0.006)
    assert samples[("fpgaserve_queue_depth", ())] == 0
    assert samples[("fpgaserve_inflight_inputs", ())] == 0
    assert samples[("fpgaserve_model_ready", ())] == 1
    assert ("process_resident_memory_bytes", ()) in samples


async def test_each_app_has_its_own_registry(make_client: MakeClient, png: bytes) -> None:
    first, second = await make_client(), await make_client()
    await first.post("/score", data=png, headers={"Content-Type": "image/png"})
    text = await (await second.get("/metrics")).text()
    assert 'route="/score"' not in text
    assert REGISTRY.get_sample_value("fpgaserve_inputs_total") is None  # the global one is untouched
