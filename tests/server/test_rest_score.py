"""POST /score: raw image bodies, JSON with base64 images or tensors, labels, and its errors."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from fpgaserve.server.testing import FakeRuntime
from tests.server.helpers import MakeClient, b64


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream", None])
async def test_a_raw_image_gets_probabilities_and_top5(
    client: TestClient[Any, Any], runtime: FakeRuntime, png: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/score", data=png, headers=headers)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model"] == "fake" and body["version"] == "1" and body["deviceSeconds"] > 0
    (result,) = body["results"]
    expected = runtime.predict([png]).outputs[0]
    np.testing.assert_allclose(result["probabilities"], expected, rtol=1e-5, atol=1e-8)
    top = result["top5"]
    assert [t["index"] for t in top] == list(np.argsort(-expected)[:5])
    assert top[0]["label"] == f"class_{top[0]['index']}"
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)


async def test_json_images_answer_in_order(client: TestClient[Any, Any], png: bytes, jpeg: bytes) -> None:
    single = [await (await client.post("/score", data=image)).json() for image in (png, jpeg)]
    response = await client.post("/score", json={"images": [b64(png), b64(jpeg)]})
    assert response.status == 200
    results = (await response.json())["results"]
    for got, alone in zip(results, single, strict=True):
        np.testing.assert_allclose(
            got["probabilities"], alone["results"][0]["probabilities"], rtol=1e-5, atol=1e-8
        )


async def test_no_labels_no_top5(make_client: MakeClient, png: bytes) -> None:
    client = await make_client(FakeRuntime(labels=False))
    result = (await (await client.post("/score", data=png)).json())["results"][0]
    assert "top5" not in result and len(result["probabilities"]) == 10


async def test_tensor_models_take_instances(make_client: MakeClient) -> None:
    client = await make_client(FakeRuntime(input_kind="tensor", tensor_size=4))
    response = await client.post("/score", json={"instances": [[0, 1, 2, 3], [1, 1, 1, 1]]})
    assert response.status == 200
    assert len((await response.json())["results"]) == 2
    response = await client.post("/score", json={"instances": [[0, 1, 2]]})
    assert response.status == 400
    assert "input 0" in (await response.json())["error"] and "(4)" in (await response.json())["error"]
    response = await client.post("/score", data=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert response.status == 400 and "instances" in (await response.json())["error"]


async def test_concurrent_scores_are_batched(make_client: MakeClient, png: bytes) -> None:
    runtime = FakeRuntime(batch_cost_s=0.05)
    client = await make_client(runtime, max_batch_size=8)
    responses = await asyncio.gather(*(client.post("/score", data=png) for _ in range(8)))
    assert all(r.status == 200 for r in responses)
    assert max(runtime.batch_sizes) > 1


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        (
            {"data": b"not an image", "headers": {"Content-Type": "image/jpeg"}},
            400,
            "input 0: not a decodable",
        ),
        ({"data": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty"),
        ({"json": {"images": ["aGVsbG8=", "!!!"]}}, 400, "input 1: not valid base64"),
        ({"json": {"images": []}}, 400, "at least one"),
        ({"json": {"images": "aGVsbG8="}}, 400, '{"images"'),
        ({"json": ["aGVsbG8="]}, 400, "JSON object"),
        ({"json": {"images": [5]}}, 400, "input 0: expected a base64 string"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"data": "hi", "headers": {"Content-Type": "text/plain"}}, 415, "image/jpeg"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    client: TestClient[Any, Any], kwargs: dict[str, Any], status: int, message: str
) -> None:
    response = await client.post("/score", **kwargs)
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_the_bad_image_among_good_ones_is_named(client: TestClient[Any, Any], png: bytes) -> None:
    response = await client.post("/score", json={"images": [b64(png), b64(png), b64(b"GIF89a...")]})
    assert response.status == 400
    assert (await response.json())["error"].startswith("input 2:")


async def test_an_oversized_body_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=2048)
    response = await client.post("/score", data=b"\xff" * 4096, headers={"Content-Type": "image/jpeg"})
    assert response.status == 413
    assert "--max-body-bytes" in (await response.json())["error"]


async def test_a_slow_model_times_out_with_504(make_client: MakeClient, png: bytes) -> None:
    client = await make_client(FakeRuntime(batch_cost_s=0.5), request_timeout_s=0.1)
    response = await client.post("/score", data=png)
    assert response.status == 504
    assert "--request-timeout-s" in (await response.json())["error"]
