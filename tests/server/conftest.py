"""Fixtures for the server tests: test images, a fake runtime, and apps driven by aiohttp_client."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.testing import FakeRuntime, encode_jpeg, encode_png, sample_image
from tests.server.helpers import MakeClient


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
