"""/healthz and /readyz: alive at once, ready only once the model is loaded and warmed up."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fpgaserve.server.testing import FakeRuntime
from tests.server.helpers import MakeClient
from tests.support.polling import eventually


async def test_ready_once_loaded(client: TestClient[Any, Any]) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "alive"}
    assert await (await client.get("/readyz")).json() == {"status": "ready", "model": "fake", "version": "1"}


async def test_alive_but_not_ready_while_the_model_loads(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    runtime = FakeRuntime()

    def load() -> FakeRuntime:
        release.wait(10)
        return runtime

    client = await make_client(load)
    assert (await client.get("/healthz")).status == 200
    with caplog.at_level(logging.INFO, logger="fpgaserve"):
        for _ in range(3):  # a probe every second while a model loads: an answer, not a log line each
            response = await client.get("/readyz")
            assert response.status == 503 and response.headers["Retry-After"] == "1"
            assert "still loading" in (await response.json())["error"]
    assert not [r for r in caplog.records if "/readyz" in r.getMessage()]
    assert (await client.post("/score", data=b"x")).status == 503
    release.set()

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(ready, what="/readyz 200")
    assert runtime.batch_sizes == [2]  # warmed up with one small batch through the server's path


async def test_a_failed_load_is_reported_by_readyz(make_client: MakeClient) -> None:
    def load() -> FakeRuntime:
        raise FileNotFoundError("service_def.zip: no manifest")

    client = await make_client(load)

    async def failed() -> str | None:
        response = await client.get("/readyz")
        error: str = (await response.json())["error"]
        return error if response.status == 503 and "failed" in error else None

    error = await eventually(failed, what="/readyz reporting the failed load")
    assert "failed to load: FileNotFoundError: service_def.zip: no manifest" in error
