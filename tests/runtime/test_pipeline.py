"""The pipeline runtime end to end: packages made by the SDK, loaded, warmed up and run on emulated devices."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data

from fpgaserve.npu import EmulatedDevice, get_device_model
from fpgaserve.package import load_service_definition
from fpgaserve.runtime.pipeline import PipelineRuntime, load_pipeline
from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime, StagedRuntime, TensorSpec
from tests.runtime.tiny import LABELS, SIZE, encode, sample_images

CAT_LABELS = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat, Siamese"}


@pytest.fixture(scope="module")
def tiny(tiny_package: Path) -> Iterator[PipelineRuntime]:
    with load_pipeline(tiny_package, env={}) as runtime:
        yield runtime


def test_implements_the_model_runtime_protocol(tiny: PipelineRuntime) -> None:
    assert isinstance(tiny, ModelRuntime)
    assert tiny.name == "tiny" and tiny.version == "1"
    assert tiny.input_spec == TensorSpec(name="images", dtype="string", shape=())
    assert tiny.output_spec == TensorSpec(name="probabilities", dtype="float32", shape=(len(LABELS),))
    assert tiny.labels == LABELS
    assert tiny.warmup_seconds > 0
    assert [d.device_id for d in tiny.devices] == ["fpga-local-0"]  # devices_from_environment({})


def test_predict_matches_the_float_pipeline(tiny: PipelineRuntime, tiny_models: tuple[Any, Any]) -> None:
    import tensorflow as tf

    from fpgaserve.sdk import preprocess_array

    images = sample_images()
    result = tiny.predict(images)
    featurizer, classifier = tiny_models
    expected = classifier(featurizer(preprocess_array(tf.constant(images), model="none", size=SIZE))).numpy()
    assert result.outputs.shape == (3, len(LABELS)) and result.outputs.dtype == np.float32
    np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(result.outputs, expected, atol=0.02)  # BFP featurizer vs float
    assert result.device_seconds > 0


def _tiff() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_validate_names_the_bad_input(tiny: PipelineRuntime) -> None:
    good = sample_images()[0]
    tiny.validate(good, index=0)
    with pytest.raises(InvalidInput, match="input 2: not a decodable image") as info:
        tiny.validate(b"GIF89a-not-really", index=2)
    assert info.value.index == 2
    with pytest.raises(InvalidInput, match="input 3: not a decodable image"):
        tiny.validate(_tiff(), index=3)  # Pillow reads TIFF; the pipeline's decoder does not
    # Damage past the header passes this cheap check; predict names it (the next test).
    tiny.validate(good[: len(good) // 3], index=0)
    with pytest.raises(InvalidInput, match="input 1: empty image"):
        tiny.validate(b"", index=1)
    with pytest.raises(InvalidInput, match="expected encoded image bytes"):
        tiny.validate(np.zeros((SIZE, SIZE, 3), np.float32), index=0)


def test_predict_names_an_undecodable_input(tiny: PipelineRuntime) -> None:
    good = sample_images()[0]
    with pytest.raises(InvalidInput, match="input 1") as info:
        tiny.predict([good, good[: len(good) // 3], good])
    assert info.value.index == 1
    with pytest.raises(InvalidInput, match="empty batch"):
        tiny.predict([])
    with pytest.raises(InvalidInput, match="expected encoded images"):
        tiny.predict(np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_predict_is_thread_safe(tiny: PipelineRuntime) -> None:
    images = sample_images()
    batches = [images[i % 3 : i % 3 + 1 + i % 2] for i in range(12)]
    serial = [tiny.predict(batch).outputs for batch in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(lambda batch: tiny.predict(batch).outputs, batches))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_take_the_devices_in_turn(tiny_package: Path) -> None:
    devices = [EmulatedDevice(get_device_model("pbs-tiny"), device_id=f"fpga-{i}") for i in range(2)]
    with load_pipeline(tiny_package, devices=devices, warmup=False) as runtime:
        assert all(d.used_bytes > 0 for d in devices)  # the program is resident on both
        one = runtime.predict(sample_images()[:1])
        two = runtime.predict(sample_images()[:1])
        np.testing.assert_array_equal(one.outputs, two.outputs)
        assert one.device_seconds == pytest.approx(two.device_seconds)
    assert all(d.used_bytes == 0 for d in devices)  # close() released the device memory


def test_device_model_from_the_environment(tiny_package: Path) -> None:
    with load_pipeline(tiny_package, env={"FPGASERVE_DEVICE_MODEL": "pbs-a10"}, warmup=False) as runtime:
        assert [d.model.name for d in runtime.devices] == ["pbs-a10"]


def test_loads_an_extracted_directory_and_cleans_up_its_own(tiny_package: Path, tmp_path: Path) -> None:
    load_service_definition(tiny_package, dest=tmp_path / "model")
    with load_pipeline(tmp_path / "model", env={}, warmup=False) as runtime:
        assert runtime.predict(sample_images()[:1]).outputs.shape == (1, len(LABELS))
    assert (tmp_path / "model" / "manifest.json").is_file()  # a directory it did not create stays
    zipped = load_pipeline(tiny_package, env={}, warmup=False)
    root = zipped.definition.root
    zipped.close()
    assert not root.exists()  # a zip's temporary extraction goes
    with pytest.raises(RuntimeError, match="closed"):
        zipped.predict(sample_images()[:1])


def test_labels_must_match_the_output(tiny_package: Path, tmp_path: Path) -> None:
    definition = load_service_definition(tiny_package, dest=tmp_path / "model")
    labels = definition.member_path("labels.txt")
    labels.write_text("only\ntwo\n")
    broken = type(definition)(root=definition.root, manifest=definition.manifest)
    with pytest.raises(RuntimeError, match="2 labels but its output has 4 classes"):
        PipelineRuntime(broken, devices=[EmulatedDevice()], warmup=False)


def test_float_input_package(tmp_path: Path, tiny_models: tuple[Any, Any]) -> None:
    from fpgaserve.sdk import FpgaStage, KerasStage, ModelDefinition

    featurizer, classifier = tiny_models
    definition = ModelDefinition("tensors")
    definition.pipeline += [FpgaStage(featurizer), KerasStage(classifier)]
    definition.save(tmp_path / "p.zip")
    with load_pipeline(tmp_path / "p.zip", env={}) as runtime:
        assert runtime.input_spec == TensorSpec(name="pixels", dtype="float32", shape=(SIZE, SIZE, 3))
        assert runtime.labels is None
        x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
        np.testing.assert_allclose(runtime.predict(x).outputs, classifier(featurizer(x)).numpy(), atol=0.02)
        runtime.validate(x[0], index=0)
        with pytest.raises(
            InvalidInput, match=r"input 4: shape \[16, 16, 3\] does not match float32\[32, 32, 3\]"
        ):
            runtime.validate(x[0, :16, :16], index=4)
        with pytest.raises(InvalidInput, match="expected a batch of float32"):
            runtime.predict(x[:, :16])


def test_efficientnet_lite0_package_sees_a_cat(lite0_package: Path) -> None:
    with load_pipeline(lite0_package, env={}) as runtime:
        assert runtime.labels is not None and len(runtime.labels) == 1000
        photo = encode(skimage.data.chelsea(), "jpeg")
        result = runtime.predict([photo, photo])
        top = int(result.outputs[0].argmax())
        assert runtime.labels[top] in CAT_LABELS
        assert result.outputs[0].max() > 0.3
        np.testing.assert_array_equal(result.outputs[0], result.outputs[1])


def test_package_directory_survives_runtime_close(tiny_package: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zip"
    shutil.copy(tiny_package, copy)
    with load_pipeline(copy, env={}, warmup=False):
        pass
    assert copy.is_file()


async def test_a_damaged_image_is_named_once_in_its_own_request(
    tiny_package: Path, aiohttp_client: Any
) -> None:
    # The image passes the cheap header check, then fails to decode inside a batch shared with
    # another request: only its request fails, naming it by that request's numbering, once.
    import asyncio
    import base64

    from fpgaserve.server.settings import ServerSettings
    from fpgaserve.server.web_app import make_app

    good = sample_images()[0]
    damaged = good[: len(good) // 3]
    runtime = load_pipeline(tiny_package, env={})
    client = await aiohttp_client(make_app(runtime=runtime, settings=ServerSettings(max_batch_delay_ms=50)))

    async def score(*images: bytes) -> tuple[int, Any]:
        body = {"images": [base64.b64encode(i).decode() for i in images]}
        response = await client.post("/score", json=body)
        return response.status, await response.json()

    (ok, answer), (bad, error) = await asyncio.gather(score(good), score(good, damaged))
    assert ok == 200 and len(answer["results"]) == 1
    assert (bad, error["error"]) == (400, "input 1: not a decodable image (its data is damaged)")


def test_prepare_then_complete_is_predict_bit_for_bit_in_any_threads(tiny: PipelineRuntime) -> None:
    # The server's pipelined batcher (server/batching.py) runs prepare and complete in two threads,
    # batch k+1's prepare beside batch k's complete: the answers must not depend on that. (That they
    # do not depend on the batch either holds for host-stage packages: test_host_stages.py; this
    # package's classifier is a TensorFlow stage, whose GEMM differs with the batch size.)
    assert isinstance(tiny, StagedRuntime)
    images = sample_images()
    whole = tiny.predict(images)
    staged = tiny.complete(tiny.prepare(images))
    np.testing.assert_array_equal(staged.outputs, whole.outputs)
    assert staged.device_seconds == whole.device_seconds
    batches = [images[i % 3 : i % 3 + 1 + i % 2] for i in range(8)]
    serial = [tiny.predict(batch).outputs for batch in batches]
    with ThreadPoolExecutor(max_workers=1) as host, ThreadPoolExecutor(max_workers=1) as device:
        prepared = [host.submit(tiny.prepare, batch) for batch in batches]
        overlapped = [device.submit(lambda p: tiny.complete(p.result()).outputs, p) for p in prepared]
        for a, b in zip(serial, overlapped, strict=True):
            np.testing.assert_array_equal(a, b.result())


def test_prepare_names_an_undecodable_input(tiny: PipelineRuntime) -> None:
    good = sample_images()[0]
    with pytest.raises(InvalidInput, match="input 1") as info:
        tiny.prepare([good, good[: len(good) // 3]])
    assert info.value.index == 1
    prepared = tiny.prepare([good])
    assert prepared.size == 1 and prepared.values.shape == (1, SIZE, SIZE, 3)
