"""TF Serving REST: :predict in row and columnar form, b64 images, model status and metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from fpgaserve.server.testing import FakeRuntime
from tests.server.helpers import MakeClient, b64


@pytest.mark.parametrize(
    "document",
    [
        lambda img: {"instances": [{"b64": img}, {"b64": img}]},
        lambda img: {"instances": [{"image": {"b64": img}}, {"image": {"b64": img}}]},
        lambda img: {"signature_name": "serving_default", "inputs": [{"b64": img}, {"b64": img}]},
        lambda img: {"inputs": {"image": [{"b64": img}, {"b64": img}]}},
    ],
)
async def test_predict_forms(
    client: TestClient[Any, Any], runtime: FakeRuntime, png: bytes, document: Any
) -> None:
    body = document(b64(png))
    response = await client.post("/v1/models/fake:predict", json=body)
    assert response.status == 200, await response.text()
    answer = await response.json()
    key = "predictions" if "instances" in body else "outputs"
    rows = np.asarray(answer[key])
    assert rows.shape == (2, 10)
    np.testing.assert_allclose(rows[0], runtime.predict([png]).outputs[0], rtol=1e-5, atol=1e-8)


async def test_versioned_predict_and_status(client: TestClient[Any, Any], png: bytes) -> None:
    response = await client.post(
        "/v1/models/fake/versions/1:predict", json={"instances": [{"b64": b64(png)}]}
    )
    assert response.status == 200
    status = await (await client.get("/v1/models/fake")).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert (await client.get("/v1/models/fake/versions/1")).status == 200
    assert (await client.get("/v1/models/fake/versions/7")).status == 404
    assert (await client.post("/v1/models/other:predict", json={"instances": []})).status == 404
    metadata = await (await client.get("/v1/models/fake/metadata")).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_STRING"
    assert signature["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == "10"


async def test_tensor_instances(make_client: MakeClient) -> None:
    client = await make_client(FakeRuntime(input_kind="tensor", tensor_size=2))
    response = await client.post(
        "/v1/models/fake:predict", json={"instances": [[1, 2], {"features": [3, 4]}]}
    )
    assert response.status == 200 and len((await response.json())["predictions"]) == 2
    response = await client.post("/v1/models/fake:predict", json={"instances": [{"b64": "AAAA"}]})
    assert response.status == 400 and "input 0" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "either"),
        ({"instances": [], "inputs": []}, "either"),
        ({"instances": []}, "non-empty list"),
        ({"instances": [{"b64": "aGk="}, "raw"]}, "input 1"),
        ({"instances": [{"pixels": {"b64": "aGk="}}]}, "one input, 'image'"),
        ({"inputs": {"pixels": []}}, "one input, 'image'"),
        ({"instances": [{"b64": "aGk="}]}, "input 0: not a decodable"),
    ],
)
async def test_bad_predicts_are_400(
    client: TestClient[Any, Any], document: dict[str, Any], message: str
) -> None:
    response = await client.post("/v1/models/fake:predict", json=document)
    assert response.status == 400
    assert message in (await response.json())["error"]
