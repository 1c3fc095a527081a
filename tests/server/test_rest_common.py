"""Body reading shared by every face: size limits before and while reading, JSON errors."""

from __future__ import annotations

import pytest

from fpgaserve.server.errors import InvalidRequest
from fpgaserve.server.rest_common import parse_json
from tests.server.helpers import MakeClient


@pytest.mark.parametrize("path", ["/score", "/v2/models/fake/infer", "/v1/models/fake:predict"])
async def test_every_face_refuses_oversized_bodies(make_client: MakeClient, path: str) -> None:
    client = await make_client(max_body_bytes=1024)
    response = await client.post(
        path, data=b"[" + b" " * 2048 + b"]", headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert "1024" in (await response.json())["error"]


async def test_a_chunked_body_over_the_limit_is_refused_while_reading(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield b"\xff" * 1024

    response = await client.post("/score", data=chunks(), headers={"Content-Type": "image/jpeg"})
    assert response.status == 413 and "error" in await response.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"  ", "empty"),
        (b'"\xc3"', "not UTF-8"),
        (b"{'a': 1}", "line 1 column 2"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_parse_json_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_json(body)
