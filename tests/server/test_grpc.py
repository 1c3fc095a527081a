"""The gRPC port in process: the committed descriptors against protoc and the official protos, the
one error mapping, overload and draining over a real grpc.aio channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaserve.runtime.protocol import InvalidInput
from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.auth import KEYSTORE_KEY
from fpgaserve.server.errors import (
    InferenceTimeout,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
    ServerError,
    Unauthorized,
)
from fpgaserve.server.grpc_common import RETRY_PUSHBACK_KEY, grpc_status
from fpgaserve.server.grpc_messages import DESCRIPTOR_SET_PATH, oip, pool
from fpgaserve.server.grpc_server import GrpcServer
from fpgaserve.server.metrics import METRICS_KEY
from fpgaserve.server.protogen import generate
from fpgaserve.server.rest_common import DATAPLANE_KEY
from fpgaserve.server.testing import FakeRuntime, encode_png, sample_image


def test_the_committed_descriptor_set_is_what_protoc_generates(tmp_path: Path) -> None:
    fresh = generate(out_file=tmp_path / "descriptors.binpb")
    assert fresh.read_bytes() == DESCRIPTOR_SET_PATH.read_bytes(), (
        "protos/descriptors.binpb is out of date with protos/*.proto; run "
        "`python -m fpgaserve.server.protogen` and commit the result"
    )


def _fields(descriptor: Any) -> dict[str, tuple[int, int, bool, str]]:
    return {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type is not None else "",
        )
        for f in descriptor.fields
    }


def _check_messages(ours: Any, official: Any, *, seen: set[str]) -> None:
    """Every field of ours is on the wire what the official message's field of that name is."""
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    assert ours.full_name == official.full_name
    mine, theirs = _fields(ours), _fields(official)
    for name, field in mine.items():
        assert theirs.get(name) == field, f"{ours.full_name}.{name}: {field} != {theirs.get(name)}"
    for f in ours.fields:
        if f.message_type is not None and not f.message_type.full_name.startswith("google.protobuf"):
            _check_messages(f.message_type, official.fields_by_name[f.name].message_type, seen=seen)


def _check_service(name: str, official: Any, *, required: set[str]) -> None:
    ours = pool().FindServiceByName(name)
    assert {m.name for m in ours.methods} == required
    seen: set[str] = set()
    for method in ours.methods:
        theirs = official.methods_by_name[method.name]
        _check_messages(method.input_type, theirs.input_type, seen=seen)
        _check_messages(method.output_type, theirs.output_type, seen=seen)


def test_the_oip_service_matches_tritons_on_the_wire() -> None:
    from tritonclient.grpc import service_pb2

    official = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    required = {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
    _check_service("inference.GRPCInferenceService", official, required=required)


def test_the_tf_serving_service_matches_tensorflow_servings_on_the_wire() -> None:
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2

    official = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    _check_service("tensorflow.serving.PredictionService", official, required={"Predict", "GetModelMetadata"})
    seen: set[str] = set()
    _check_messages(
        pool().FindMessageTypeByName("tensorflow.serving.SignatureDefMap"),
        get_model_metadata_pb2.SignatureDefMap.DESCRIPTOR,
        seen=seen,
    )
    ours = pool().FindEnumTypeByName("tensorflow.DataType")
    for value in ours.values:
        assert types_pb2.DataType.Value(value.name) == value.number


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidInput("bad", index=2), grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthorized("no key"), grpc.StatusCode.UNAUTHENTICATED),
        (ModelNotFound("other"), grpc.StatusCode.NOT_FOUND),
        (PayloadTooLarge("big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (InferenceTimeout("slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ModelNotReady("loading"), grpc.StatusCode.UNAVAILABLE),
        (QueueFull("full", retry_after_s=2), grpc.StatusCode.UNAVAILABLE),
        (ServerError("boom"), grpc.StatusCode.INTERNAL),
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
    ],
)
def test_domain_errors_map_to_grpc_status_codes_once(error: Exception, code: grpc.StatusCode) -> None:
    mapped, message, trailers = grpc_status(error)
    assert mapped == code
    if isinstance(error, InvalidInput):
        assert message == "input 2: bad"
    if isinstance(error, QueueFull):
        assert trailers == ((RETRY_PUSHBACK_KEY, "2000"),) and "retry after 2 s" in message
    if isinstance(error, RuntimeError):
        assert "secret detail" not in message


@pytest.fixture
async def app_server() -> AsyncIterator[Any]:
    servers: list[tuple[TestServer, GrpcServer]] = []

    async def start(runtime: Any, **settings: Any) -> tuple[Any, str]:
        values = ServerSettings(grpc_port=0, host="127.0.0.1", **settings)
        app = make_app(runtime=runtime, settings=values)
        http = TestServer(app, host="127.0.0.1")
        await http.start_server()  # runs the app's start-up: the model is loaded and warm
        grpc_server = GrpcServer(
            plane=app[DATAPLANE_KEY],
            settings=values,
            metrics=app[METRICS_KEY],
            keystore=app.get(KEYSTORE_KEY),
        )
        port = await grpc_server.start()
        servers.append((http, grpc_server))
        return app, f"127.0.0.1:{port}"

    yield start
    for http, grpc_server in servers:
        await grpc_server.stop()
        await http.close()


def _infer_request(images: list[bytes]) -> Any:
    request = oip("ModelInferRequest")(model_name="fake")
    request.inputs.add(name="image", datatype="BYTES", shape=[len(images)]).contents.bytes_contents.extend(
        images
    )
    return request


async def test_overload_answers_unavailable_with_a_retry_hint(app_server: Any) -> None:
    runtime = FakeRuntime(batch_cost_s=0.3)
    _, target = await app_server(runtime, max_batch_size=1, max_queue=1)
    image = encode_png(sample_image(seed=0))
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=oip("ModelInferRequest").SerializeToString,
            response_deserializer=oip("ModelInferResponse").FromString,
        )
        calls = [infer(_infer_request([image]), timeout=30) for _ in range(4)]
        results = await asyncio.gather(*(_outcome(call) for call in calls))
    codes = [code for code, _ in results]
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.UNAVAILABLE in codes, codes
    trailers = next(t for code, t in results if code == grpc.StatusCode.UNAVAILABLE)
    assert dict(trailers)[RETRY_PUSHBACK_KEY] == "1000"


async def _outcome(call: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.trailing_metadata()
    shape = list(response.outputs[0].shape)
    assert shape == [1, 10]
    assert np.frombuffer(response.raw_output_contents[0], dtype="<f4").shape == (10,)
    return grpc.StatusCode.OK, ()


async def test_health_turns_not_serving_on_drain_and_oip_readiness_follows(app_server: Any) -> None:
    app, target = await app_server(FakeRuntime())
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerReady",
            request_serializer=oip("ServerReadyRequest").SerializeToString,
            response_deserializer=oip("ServerReadyResponse").FromString,
        )
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert (await ready(oip("ServerReadyRequest")(), timeout=10)).ready
        app[DATAPLANE_KEY].drain()  # what SIGTERM does first
        check = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not (await ready(oip("ServerReadyRequest")(), timeout=10)).ready


async def test_fp32_models_take_tensors_and_classification_needs_an_integer(app_server: Any) -> None:
    runtime = FakeRuntime(input_kind="tensor", tensor_size=4)
    _, target = await app_server(runtime)
    values = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=oip("ModelInferRequest").SerializeToString,
            response_deserializer=oip("ModelInferResponse").FromString,
        )
        request = oip("ModelInferRequest")(model_name="fake")
        request.inputs.add(name="features", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
            values.reshape(-1).tolist()
        )
        response = await infer(request, timeout=10)
        got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
        np.testing.assert_allclose(got, runtime.predict(values).outputs, rtol=1e-5, atol=1e-8)

        request.outputs.add(name="probabilities").parameters["classification"].string_param = "three"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await infer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "integer" in (info.value.details() or "")

        wrong = oip("ModelInferRequest")(model_name="fake")
        wrong.inputs.add(name="features", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await infer(wrong, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needs 4 elements, got 1" in (info.value.details() or "")


async def test_a_message_over_the_body_limit_is_refused_and_the_server_goes_on(app_server: Any) -> None:
    _, target = await app_server(FakeRuntime(), max_body_bytes=4096)
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=oip("ModelInferRequest").SerializeToString,
            response_deserializer=oip("ModelInferResponse").FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await infer(_infer_request([b"\xff" * 8192]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = encode_png(sample_image(seed=0, side=16))
        assert len(small) < 4000
        response = await infer(_infer_request([small]), timeout=10)
        assert list(response.outputs[0].shape) == [1, 10]


async def test_a_grpc_port_in_use_is_a_clear_error() -> None:
    import socket

    from fpgaserve.server.dataplane import DataPlane
    from fpgaserve.server.metrics import ServerMetrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServerSettings(host="127.0.0.1", port=0, grpc_port=port)
        metrics = ServerMetrics()
        server = GrpcServer(
            plane=DataPlane(settings=settings, metrics=metrics),
            settings=settings,
            metrics=metrics,
            keystore=None,
        )
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port} \(--grpc-port\).*in use"):
            await server.start()
        await server.stop()
