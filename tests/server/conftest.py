"""Fixtures for the server tests: test images, a fake runtime, apps driven by aiohttp_client, batchers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.batching import DynamicBatcher
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.testing import FakeRuntime, encode_jpeg, encode_png, sample_image
from tests.server.helpers import MakeBatcher, MakeClient


@pytest.fixture
def png() -> bytes:
    return encode_png(sample_image(seed=0))


@pytest.fixture
def jpeg() -> bytes:
    return encode_jpeg(sample_image(seed=1))


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    """``await make_client(runtime=..., **settings)``: a client of a fresh app (a new one per call)."""

    async def make(runtime: Any = None, **settings: Any) -> TestClient[Any, Any]:
        app = make_app(runtime=runtime or FakeRuntime(), settings=ServerSettings(**settings))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient, runtime: FakeRuntime) -> TestClient[Any, Any]:
    return await make_client(runtime)


@pytest.fixture
async def make_batcher() -> AsyncIterator[MakeBatcher]:
    """``make_batcher(runtime, **settings)``: a started ``DynamicBatcher`` (closed after the test).

    Settings not given: batches of up to 4, a 50 ms batch delay, a queue of 64 inputs."""
    made: list[DynamicBatcher] = []

    def make(
        runtime: Any,
        *,
        max_batch_size: int = 4,
        max_batch_delay_s: float = 0.05,
        max_queue: int = 64,
        **options: Any,
    ) -> DynamicBatcher:
        batcher = DynamicBatcher(
            runtime=runtime,
            metrics=ServerMetrics(),
            max_batch_size=max_batch_size,
            max_batch_delay_s=max_batch_delay_s,
            max_queue=max_queue,
            **options,
        )
        batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        await batcher.close()
