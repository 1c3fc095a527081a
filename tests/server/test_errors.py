"""The error middleware: every error, ours or aiohttp's, leaves as {"error": ...} with its status."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from fpgaserve.runtime.protocol import InvalidInput
from fpgaserve.server import errors


def _app(exc: BaseException) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[errors.error_middleware])
    app.router.add_get("/raise", handler)
    app.router.add_post("/only-post", handler)
    return app


@pytest.mark.parametrize(
    ("exc", "status", "message", "header"),
    [
        (errors.InvalidRequest("bad shape"), 400, "bad shape", None),
        (InvalidInput("does not decode", index=2), 400, "input 2: does not decode", None),
        (InvalidInput("no index"), 400, "no index", None),
        (errors.Unauthorized("missing key"), 401, "missing key", "WWW-Authenticate"),
        (errors.ModelNotFound("no such model"), 404, "no such model", None),
        (errors.RequestTimeout("slow body"), 408, "slow body", None),
        (errors.PayloadTooLarge("too big"), 413, "too big", None),
        (errors.UnsupportedMediaType("text/plain"), 415, "text/plain", None),
        (errors.ModelNotReady("loading"), 503, "loading", "Retry-After"),
        (errors.QueueFull("full"), 503, "full", "Retry-After"),
        (errors.InferenceTimeout("too slow"), 504, "too slow", None),
        (ValueError("secret internals"), 500, "internal server error", None),
        (web.HTTPRequestEntityTooLarge(max_size=10, actual_size=20), 413, "too large", None),
        (web.HTTPBadRequest(text="aiohttp says no"), 400, "aiohttp says no", None),
    ],
)
async def test_errors_become_json_with_their_status(
    aiohttp_client: Any, exc: BaseException, status: int, message: str, header: str | None
) -> None:
    client = await aiohttp_client(_app(exc))
    response = await client.get("/raise")
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and message in body["error"]
    assert "secret internals" not in body["error"]
    if header is not None:
        assert header in response.headers


async def test_unknown_routes_and_methods_are_json_and_say_what_to_do(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(ValueError()))
    response = await client.get("/nowhere")
    assert response.status == 404 and "/openapi.json" in (await response.json())["error"]
    response = await client.get("/only-post")
    assert response.status == 405
    assert response.headers["Allow"] == "POST" and "allowed: POST" in (await response.json())["error"]


async def test_redirects_pass_through(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(web.HTTPFound("/elsewhere")))
    response = await client.get("/raise", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/elsewhere"


async def test_unexpected_errors_are_logged_with_their_traceback(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(_app(KeyError("boom")))
    assert (await client.get("/raise")).status == 500
    assert "GET /raise failed" in caplog.text and "KeyError" in caplog.text
