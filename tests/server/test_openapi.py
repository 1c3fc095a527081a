"""The OpenAPI document: complete and valid, and the served API fuzzed against it (schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.openapi import build_openapi
from fpgaserve.server.testing import FakeRuntime
from tests.server.helpers import SecretMount, keys_json

KEY = "fuzzing-key-0123456789"


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def test_every_route_is_documented_and_nothing_else() -> None:
    app = make_app(runtime=FakeRuntime(), settings=ServerSettings())
    document = build_openapi(runtime=FakeRuntime(), server_version="1.0")
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == _routes(app)


async def test_the_document_is_served_and_names_the_model_once_ready(client: Any) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.0")
    name = document["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]
    assert name["schema"]["enum"] == ["fake"]
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(build_openapi(runtime=None, server_version="1.0"))
    operations = [result.ok() for result in schema.get_all_operations()]  # ok() raises on an invalid one
    assert len(operations) == len(OPERATIONS) == 19


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server on an event loop in a thread of its own (schemathesis calls it with blocking
    requests), with key auth on."""
    keys = SecretMount(Path(tmp_path_factory.mktemp("keys")), {"keys.json": keys_json(KEY)})
    settings_ = ServerSettings(keys_file=keys.root / "keys.json", max_body_bytes=64 * 1024)
    runner = web.AppRunner(make_app(runtime=FakeRuntime(), settings=settings_))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> str:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture(scope="module")
def api_schema(served: str) -> Any:
    return schemathesis.openapi.from_url(f"{served}/openapi.json")


def errors_are_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is a JSON object with a string "error"."""
    if response.status_code >= 400:
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), response.headers
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_are_json,
]
_PATHS = build_openapi(runtime=None, server_version="0")["paths"]
OPERATIONS = [(method.upper(), path) for path, item in _PATHS.items() for method in item]
# Negative cases need something to break: a parameter or a body.
FUZZ_CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(_PATHS[path][method.lower()])
]


@pytest.mark.parametrize(("method", "path", "mode"), FUZZ_CASES)
def test_fuzzing_finds_no_server_error_and_no_non_json_error(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

    fuzz()
