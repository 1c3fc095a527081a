"""The gRPC port against clients nobody here wrote: tritonclient.grpc, TF Serving's own
PredictionServiceStub (tensorflow-serving-api), and the standard gRPC health client.

Each server is a real process (``ServerProcess.fake``: ``server_main.run`` over a FakeRuntime) with
TLS and a keys file mounted the way the kubelet mounts Secrets, so rotation is tested as it happens
in a pod. The clients run here, in the test process, on real sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fpgaserve.server.testing import FakeRuntime, encode_png, sample_image
from tests.server.helpers import SecretMount, ServerProcess, http_get, keys_json, self_signed_cert
from tests.support.polling import wait_until

_GRPC_LISTENING = re.compile(r"listening for gRPC(?: \(TLS\))? on ([^\s]+):(\d+)")
KEY = "primary-key-1"


class Served:
    def __init__(
        self, server: ServerProcess, *, tmp: Path, keys: SecretMount | None, tls: SecretMount | None
    ):
        match = _GRPC_LISTENING.search(server.log)
        assert match, server.log
        self.server = server
        self.target = f"127.0.0.1:{match.group(2)}"
        self.keys = keys
        self.tls = tls
        self.tmp = tmp

    @property
    def root_cert(self) -> bytes | None:
        return None if self.tls is None else (self.tls.root / "tls.crt").read_bytes()

    def channel(self, *, root_cert: bytes | None = None) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.target)
        credentials = grpc.ssl_channel_credentials(root_certificates=root_cert or self.root_cert)
        return grpc.secure_channel(self.target, credentials)


def _serve(tmp: Path, *, tls: bool, keys: bool, **settings: Any) -> Served:
    key_mount = SecretMount(tmp / "keys", {"keys.json": keys_json(KEY)}) if keys else None
    tls_mount = None
    if tls:
        (tmp / "pair").mkdir()
        cert, key = self_signed_cert(tmp / "pair")
        tls_mount = SecretMount(tmp / "tls", {"tls.crt": cert.read_text(), "tls.key": key.read_text()})
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "keys_check_interval_s": 0,
        "tls_check_interval_s": 0,
        **settings,
    }
    if key_mount is not None:
        options["keys_file"] = str(key_mount.root / "keys.json")
    if tls_mount is not None:
        options["tls_cert"] = str(tls_mount.root / "tls.crt")
        options["tls_key"] = str(tls_mount.root / "tls.key")
    return Served(ServerProcess.fake(settings=options), tmp=tmp, keys=key_mount, tls=tls_mount)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server with TLS and keys, shared by the tests of this module that do not stop it."""
    served = _serve(tmp_path_factory.mktemp("secured"), tls=True, keys=True)
    with served.server:
        yield served
        assert served.server.stop() == 0, served.server.log
        assert KEY not in served.server.log and "PRIVATE KEY" not in served.server.log


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = _serve(tmp_path_factory.mktemp("plain"), tls=False, keys=False)
    with served.server:
        yield served


def _images(count: int) -> list[bytes]:
    return [encode_png(sample_image(seed=seed)) for seed in range(count)]


def _triton(served: Served) -> Any:
    import tritonclient.grpc as grpcclient

    if served.tls is None:
        return grpcclient.InferenceServerClient(served.target)
    root = served.tmp / "client-root.crt"
    root.write_bytes(served.root_cert or b"")
    return grpcclient.InferenceServerClient(served.target, ssl=True, root_certificates=str(root))


def _image_input(images: list[bytes]) -> Any:
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


@pytest.mark.parametrize("which", ["plain", "secured"])
def test_tritonclient_grpc_infers_reads_metadata_and_readiness(
    which: str, request: pytest.FixtureRequest
) -> None:
    import tritonclient.grpc as grpcclient

    served: Served = request.getfixturevalue(which)
    headers = {"authorization": f"Bearer {KEY}"} if served.keys else None
    client = _triton(served)
    try:
        assert client.is_server_live() and client.is_server_ready()  # open, as /v2/health/* on HTTP
        assert client.is_model_ready("fake", headers=headers)
        metadata = client.get_model_metadata("fake", headers=headers, as_json=True)
        assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": ["-1"]}]
        assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": ["-1", "10"]}]
        server = client.get_server_metadata(headers=headers, as_json=True)
        assert server["name"] == "fpgaserve" and "classification" in server["extensions"]

        images = _images(3)
        result = client.infer("fake", [_image_input(images)], headers=headers, request_id="r-7")
        assert result.get_response().id == "r-7"
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (3, 10) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, FakeRuntime().predict(images).outputs, rtol=1e-5, atol=1e-8)

        # The classification extension over gRPC: top-k "value:index:label" strings.
        top2 = grpcclient.InferRequestedOutput("probabilities", class_count=2)
        classes = client.infer("fake", [_image_input(images)], outputs=[top2], headers=headers)
        strings = classes.as_numpy("probabilities")
        assert strings.shape == (3, 2)
        best = int(np.argmax(probabilities[0]))
        value, index, label = strings[0][0].decode().split(":")
        assert (int(index), label) == (best, f"class_{best}")
        assert float(value) == pytest.approx(float(probabilities[0][best]), abs=1e-6)
    finally:
        client.close()


def _status_of(call: Any) -> tuple[Any, str]:
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        return exc.status(), exc.message()
    raise AssertionError("the call succeeded")


def test_missing_or_wrong_keys_and_bad_input_get_their_status_and_the_server_lives_on(
    secured: Served,
) -> None:
    client = _triton(secured)
    good = {"authorization": f"Bearer {KEY}"}
    try:
        status, message = _status_of(lambda: client.infer("fake", [_image_input(_images(1))]))
        assert status == "StatusCode.UNAUTHENTICATED" and "missing key" in message
        wrong = {"authorization": "Bearer not-the-key"}
        status, message = _status_of(lambda: client.infer("fake", [_image_input(_images(1))], headers=wrong))
        assert status == "StatusCode.UNAUTHENTICATED" and "not-the-key" not in message

        status, message = _status_of(
            lambda: client.infer("fake", [_image_input([b"not an image"])], headers=good)
        )
        assert status == "StatusCode.INVALID_ARGUMENT" and "input 0" in message
        import tritonclient.grpc as grpcclient

        floats = grpcclient.InferInput("image", [1, 4], "FP32")
        floats.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        status, message = _status_of(lambda: client.infer("fake", [floats], headers=good))
        assert status == "StatusCode.INVALID_ARGUMENT" and "datatype BYTES" in message
        status, message = _status_of(lambda: client.get_model_metadata("other", headers=good))
        assert status == "StatusCode.NOT_FOUND" and "'fake'" in message

        result = client.infer("fake", [_image_input(_images(1))], headers=good)  # still serving
        assert result.as_numpy("probabilities").shape == (1, 10)
    finally:
        client.close()
    status_code, body = http_get(
        secured.server.url.replace("https", "https") + "/metrics", context=_insecure()
    )
    text = body.decode()
    assert status_code == 200
    assert (
        'fpgaserve_grpc_requests_total{code="UNAUTHENTICATED",method="/inference.GRPCInferenceService/ModelInfer"}'
        in text
    )
    assert (
        'fpgaserve_grpc_requests_total{code="OK",method="/inference.GRPCInferenceService/ModelInfer"}' in text
    )


def _insecure() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _predict(served: Served, images: list[bytes], *, key: str | None, **request: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with served.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = request.get("model", "fake")
        name = request.get("input", "images")
        predict.inputs[name].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
        metadata = [("authorization", f"Bearer {key}")] if key else []
        return stub.Predict(predict, timeout=30, metadata=metadata)


def test_tf_servings_own_prediction_stub_predicts_the_brainwave_way(secured: Served) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    images = _images(2)
    response = _predict(secured, images, key=KEY)
    probabilities = tf.make_ndarray(response.outputs["output_alias"])  # Brainwave's output name
    assert probabilities.shape == (2, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, FakeRuntime().predict(images).outputs, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["probabilities"]), probabilities)
    assert response.model_spec.name == "fake" and response.model_spec.version.value == 1

    with secured.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "fake"
        metadata = stub.GetModelMetadata(request, timeout=30, metadata=[("authorization", f"Bearer {KEY}")])
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.inputs["image"].dtype == tf.string.as_datatype_enum
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 10]


def test_tf_serving_errors_have_their_status_codes(secured: Served) -> None:
    cases = [
        ({"key": None}, grpc.StatusCode.UNAUTHENTICATED),
        ({"key": KEY, "model": "resnet"}, grpc.StatusCode.NOT_FOUND),
        ({"key": KEY, "input": "pixels"}, grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for options, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            _predict(secured, _images(1), **options)
        assert info.value.code() == code, info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        _predict(secured, [b"\x89PNG broken"], key=KEY)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 0" in (info.value.details() or "")


def test_the_standard_health_client_sees_serving_and_unknown_services(plain: Served) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with plain.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_keys_and_certificate_rotate_without_a_restart(tmp_path: Path) -> None:
    served = _serve(tmp_path, tls=True, keys=True)
    with served.server:
        old_root = served.root_cert
        assert _predict(served, _images(1), key=KEY).outputs["output_alias"].dtype == 1

        assert served.keys is not None and served.tls is not None
        served.keys.update({"keys.json": keys_json("rotated-key")})

        def refused(key: str) -> bool:
            try:
                _predict(served, _images(1), key=key)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        wait_until(lambda: refused(KEY), what="the old key refused after rotation")
        assert _predict(served, _images(1), key="rotated-key").outputs

        (tmp_path / "next").mkdir()
        cert, key = self_signed_cert(tmp_path / "next")
        served.tls.update({"tls.crt": cert.read_text(), "tls.key": key.read_text()})

        def trusts(root: bytes | None) -> bool:
            with served.channel(root_cert=root) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=2)
                except grpc.FutureTimeoutError:
                    return False
                return True

        wait_until(lambda: trusts(cert.read_bytes()), what="new connections get the rotated certificate")
        assert not trusts(old_root)
        assert served.server.stop() == 0


def test_fpgaserve_score_grpc_prints_the_top_labels(
    secured: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fpgaserve.cli.main import main

    image = secured.tmp / "cat.png"
    image.write_bytes(_images(1)[0])
    cert = secured.tmp / "ca.crt"
    cert.write_bytes(secured.root_cert or b"")
    target = f"grpcs://{secured.target}"
    assert main(["score", target, str(image), "--grpc", "--key", KEY, "--cacert", str(cert), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    expected = FakeRuntime().predict([image.read_bytes()]).outputs[0]
    assert answer["model"] == "fake" and len(answer["top"]) == 5
    assert answer["top"][0]["index"] == int(expected.argmax())
    assert answer["top"][0]["label"] == f"class_{int(expected.argmax())}"

    assert main(["score", target, str(image), "--grpc", "--key", KEY, "--insecure"]) == 0
    assert f"class_{int(expected.argmax())}" in capsys.readouterr().out

    assert main(["score", target, str(image), "--grpc", "--key", "wrong", "--cacert", str(cert)]) != 0
    error = capsys.readouterr().err
    assert "UNAUTHENTICATED" in error and "wrong" not in error


def test_the_sdk_prediction_client_scores_the_brainwave_way(secured: Served) -> None:
    from fpgaserve.sdk.grpc_client import PredictionClient

    image = _images(1)[0]
    host, port = secured.target.split(":")
    with PredictionClient(
        host, int(port), use_ssl=True, access_token=KEY, root_certificates=secured.root_cert
    ) as client:
        probabilities = client.score_image(image)
    np.testing.assert_allclose(probabilities, FakeRuntime().predict([image]).outputs[0], rtol=1e-5, atol=1e-8)
