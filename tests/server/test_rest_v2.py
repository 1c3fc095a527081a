"""The Open Inference Protocol v2: JSON and binary tensors, metadata, and the official Triton client."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.testing import FakeRuntime, encode_png, sample_image
from tests.server.helpers import MakeClient, b64


def _bytes_input(images: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "name": "image",
        "shape": [len(images)],
        "datatype": "BYTES",
        "data": [b64(i) for i in images],
        **extra,
    }


async def test_server_and_model_metadata(client: TestClient[Any, Any]) -> None:
    server = await (await client.get("/v2")).json()
    assert server["name"] == "fpgaserve" and "binary_tensor_data" in server["extensions"]
    for path in ("/v2/models/fake", "/v2/models/fake/versions/1"):
        model = await (await client.get(path)).json()
        assert model["name"] == "fake" and model["versions"] == ["1"]
        assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert (await (await client.get("/v2/models/fake/ready")).json()) == {"name": "fake", "ready": True}
    assert (await client.get("/v2/health/live")).status == 200
    assert (await client.get("/v2/health/ready")).status == 200
    for path in ("/v2/models/other", "/v2/models/fake/versions/2", "/v2/models/other/ready"):
        response = await client.get(path)
        assert response.status == 404 and "serves" in (await response.json())["error"]


async def test_json_infer(
    client: TestClient[Any, Any], runtime: FakeRuntime, png: bytes, jpeg: bytes
) -> None:
    request = {"id": "req-1", "inputs": [_bytes_input([png, jpeg])]}
    response = await client.post("/v2/models/fake/infer", json=request)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model_name"] == "fake" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 10]
    expected = runtime.predict([png, jpeg]).outputs
    np.testing.assert_allclose(np.reshape(output["data"], (2, 10)), expected, rtol=1e-5, atol=1e-8)


async def test_binary_infer_with_binary_outputs(
    client: TestClient[Any, Any], runtime: FakeRuntime, png: bytes
) -> None:
    raw = b"".join(struct.pack("<I", len(i)) + i for i in (png, png))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = await client.post(
        "/v2/models/fake/versions/1/infer",
        data=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status == 200, await response.text()
    body = await response.read()
    length = int(response.headers["Inference-Header-Content-Length"])
    document = json.loads(body[:length])
    (output,) = document["outputs"]
    assert output["parameters"]["binary_data_size"] == 2 * 10 * 4 and "data" not in output
    values = np.frombuffer(body[length:], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(values[0], runtime.predict([png]).outputs[0], rtol=1e-5, atol=1e-8)


async def test_fp32_inputs_for_tensor_models(make_client: MakeClient) -> None:
    client = await make_client(FakeRuntime(input_kind="tensor", tensor_size=3))
    metadata = await (await client.get("/v2/models/fake")).json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    tensor = {"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}
    response = await client.post("/v2/models/fake/infer", json={"inputs": [tensor]})
    assert response.status == 200 and (await response.json())["outputs"][0]["shape"] == [2, 10]
    raw = np.arange(6, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    ).encode()
    response = await client.post(
        "/v2/models/fake/infer",
        data=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({}, "inputs: Field required"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": [{**_bytes_input([b"x"]), "name": "pixels"}]}, "one input named 'image'"),
        ({"inputs": [{**_bytes_input([b"x"]), "datatype": "FP32"}]}, "has datatype BYTES"),
        ({"inputs": [{**_bytes_input([b"x"]), "shape": [2]}]}, "needs 2 elements, got 1"),
        ({"inputs": [{**_bytes_input([b"x"]), "shape": [1, 1]}]}, "takes shape ()"),
        ({"inputs": [{**_bytes_input([b"x"]), "shape": [-1]}]}, "non-negative"),
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]},
            "neither data nor binary_data_size",
        ),
        ({"inputs": [{**_bytes_input([b"x"]), "data": ["%%%"]}]}, "input 0: not valid base64"),
        ({"inputs": [_bytes_input([b"x"])]}, "input 0: not a decodable"),
        ({"inputs": [_bytes_input([b"x"])], "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
    ],
)
async def test_bad_requests_are_400_with_the_reason(
    client: TestClient[Any, Any], request_: dict[str, Any], message: str
) -> None:
    response = await client.post("/v2/models/fake/infer", json=request_)
    assert response.status == 400
    assert message in (await response.json())["error"]


@pytest.mark.parametrize(
    ("header_length", "message"), [("abc", "must be an integer"), ("0", "outside"), ("99999", "outside")]
)
async def test_a_bad_binary_header_length_is_400(
    client: TestClient[Any, Any], header_length: str, message: str
) -> None:
    response = await client.post(
        "/v2/models/fake/infer", data=b"{}", headers={"Inference-Header-Content-Length": header_length}
    )
    assert response.status == 400 and message in (await response.json())["error"]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    """A server on a real socket, for clients that bring their own HTTP stack."""
    server = TestServer(make_app(runtime=FakeRuntime(), settings=ServerSettings()), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _triton_session(url: str) -> dict[str, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url)
    try:
        images = [encode_png(sample_image(seed=seed)) for seed in range(3)]
        tensor = httpclient.InferInput("image", [3], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary by default
        binary = client.infer("fake", [tensor]).as_numpy("probabilities")
        as_json = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        json_out = client.infer("fake", [tensor], outputs=[as_json], model_version="1").as_numpy(
            "probabilities"
        )
        bad = httpclient.InferInput("image", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
        try:
            client.infer("fake", [bad])
            error = ""
        except httpclient.InferenceServerException as exc:
            error = str(exc)
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready() and client.is_model_ready("fake"),
            "metadata": client.get_model_metadata("fake"),
            "server": client.get_server_metadata(),
            "binary": binary,
            "json": json_out,
            "error": error,
            "expected": FakeRuntime().predict(images).outputs,
        }
    finally:
        client.close()


async def test_the_official_triton_http_client_works(server: TestServer) -> None:
    result = await asyncio.to_thread(_triton_session, f"127.0.0.1:{server.port}")
    assert result["live"] and result["ready"]
    assert result["metadata"]["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    assert result["server"]["name"] == "fpgaserve"
    assert result["binary"].shape == (3, 10) and result["binary"].dtype == np.float32
    np.testing.assert_allclose(result["binary"], result["expected"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result["json"], result["expected"], rtol=1e-5, atol=1e-8)
    assert "[400]" in result["error"] and "input 0" in result["error"]


async def test_the_triton_asyncio_client_works(server: TestServer, png: bytes) -> None:
    import tritonclient.http.aio as aioclient

    client = aioclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        tensor = aioclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([png], dtype=np.object_))
        result = await client.infer("fake", [tensor])
        assert result.as_numpy("probabilities").shape == (1, 10)
    finally:
        await client.close()


def _triton_classification(url: str, images: list[bytes]) -> dict[str, Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url)
    try:
        tensor = httpclient.InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary input data
        binary = httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=3)
        as_json = httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3)
        return {
            "binary": client.infer("fake", [tensor], outputs=[binary]).as_numpy("probabilities"),
            "json": client.infer("fake", [tensor], outputs=[as_json]).as_numpy("probabilities"),
        }
    finally:
        client.close()


async def test_the_classification_extension_with_tritons_http_client(server: TestServer) -> None:
    images = [encode_png(sample_image(seed=seed)) for seed in range(2)]
    result = await asyncio.to_thread(_triton_classification, f"127.0.0.1:{server.port}", images)
    expected = FakeRuntime().predict(images).outputs
    for kind in ("binary", "json"):
        strings = result[kind]
        assert strings.shape == (2, 3), kind
        for row, probabilities in zip(strings, expected, strict=True):
            parsed = [s.decode() if isinstance(s, bytes) else s for s in row]
            indices = [int(s.split(":")[1]) for s in parsed]
            assert indices == list(np.argsort(-probabilities, kind="stable")[:3])
            assert all(s.split(":")[2] == f"class_{i}" for s, i in zip(parsed, indices, strict=True))
            assert float(parsed[0].split(":")[0]) == pytest.approx(float(probabilities[indices[0]]), abs=1e-6)


async def test_classification_needs_a_positive_integer(client: TestClient[Any, Any], png: bytes) -> None:
    body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(png)]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
    }
    response = await client.post("/v2/models/fake/infer", json=body)
    assert response.status == 400
    assert "classification" in (await response.json())["error"]
