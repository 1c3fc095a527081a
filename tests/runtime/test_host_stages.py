"""Host stages (issue 14): the TensorFlow-free form of the stages fpgaserve builds itself.

Decode and resize against TensorFlow's own ops on real photos (scikit-image's) and odd inputs; a
lowered package against its own SavedModels; recognition that lowers fpgaserve's constructions and
nothing that merely looks like them; the JPEG reduction over the pixel limit.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import skimage.data
from PIL import Image

from fpgaserve.api.manifest import HostDenseSpec, HostImagePreprocessSpec, TensorflowStageSpec
from fpgaserve.runtime.host_stages import (
    PREPROCESS_TOLERANCE,
    PROBABILITY_TOLERANCE,
    bicubic_resize,
    decode_rgb,
)
from fpgaserve.runtime.images import check_image_pixels, jpeg_reduction
from fpgaserve.runtime.pipeline import load_pipeline
from fpgaserve.runtime.protocol import InvalidInput
from tests.runtime.tiny import SIZE, encode, sample_images

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera"]


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode_cases() -> dict[str, bytes]:
    """Every kind of input the TF graph accepts: photos as JPEG (qualities, subsampling, progressive,
    gray, CMYK) and PNG (RGB, RGBA, LA, palette, 16-bit, 1-bit), GIF, BMP, WebP; odd sizes."""
    cat, camera = skimage.data.chelsea(), skimage.data.camera()
    alpha = np.broadcast_to(np.linspace(0, 255, cat.shape[1]).astype(np.uint8), cat.shape[:2])
    rgba = np.dstack([cat, alpha])
    deep = camera.astype(np.uint16) * 257 + (np.arange(camera.size).reshape(camera.shape) % 257)
    cases = {f"{name}.jpg": _save(Image.fromarray(getattr(skimage.data, name)()), "JPEG") for name in PHOTOS}
    cases |= {
        "chelsea-q95-444.jpg": _save(Image.fromarray(cat), "JPEG", quality=95, subsampling="4:4:4"),
        "chelsea-progressive.jpg": _save(Image.fromarray(cat), "JPEG", progressive=True),
        "chelsea-odd-301x453.jpg": _save(Image.fromarray(skimage.data.coffee()[:301, :453]), "JPEG"),
        "chelsea-cmyk.jpg": _save(Image.fromarray(cat).convert("CMYK"), "JPEG"),
        "coffee.png": _save(Image.fromarray(skimage.data.coffee()), "PNG"),
        "camera-odd-gray.png": _save(Image.fromarray(camera[:301, :77]), "PNG"),
        "chelsea-rgba.png": _save(Image.fromarray(rgba, "RGBA"), "PNG"),
        "chelsea-la.png": _save(Image.fromarray(rgba[..., [0, 3]], "LA"), "PNG"),
        "chelsea-palette.png": _save(Image.fromarray(cat).quantize(64), "PNG"),
        "camera-16bit.png": _save(Image.fromarray(deep.astype("<u2")), "PNG"),
        "camera-1bit.png": _save(Image.fromarray(camera > 128), "PNG"),
        "chelsea.gif": _save(Image.fromarray(cat).quantize(128), "GIF"),
        "chelsea.bmp": _save(Image.fromarray(cat), "BMP"),
        "chelsea.webp": _save(Image.fromarray(cat), "WEBP"),
        "tiny-3x2.png": _save(Image.fromarray(np.arange(18, dtype=np.uint8).reshape(2, 3, 3)), "PNG"),
    }
    return cases


CASES = decode_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_is_tensorflows(name: str) -> None:
    import tensorflow as tf

    data = CASES[name]
    expected = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(decode_rgb(data, index=0), expected)


@pytest.mark.parametrize(("shape", "size"), [((300, 451), (224, 224)), ((37, 53), (224, 224)),
                                             ((1001, 777), (32, 32)), ((5, 1), (7, 3)), ((224, 224), (224, 224))])  # fmt: skip
def test_resize_is_tensorflows(shape: tuple[int, int], size: tuple[int, int]) -> None:
    import tensorflow as tf

    image = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = tf.image.resize(tf.cast(image, tf.float32), size, method="bicubic").numpy()
    np.testing.assert_array_equal(bicubic_resize(image, height=size[0], width=size[1]), expected)


def _first_stage(runtime: Any, images: list[bytes]) -> npt.NDArray[np.float32]:
    out, _ = runtime._stages[0].run(images)
    return np.asarray(out, np.float32)


def test_a_lowered_package_answers_as_its_tensorflow_stages(lite0_package: Path) -> None:
    images = list(CASES.values())
    with (
        load_pipeline(lite0_package, env={}, warmup=False) as host,
        load_pipeline(lite0_package, env={}, warmup=False, host_stages=False) as tf_path,
    ):
        assert [type(s).__name__ for s in host._stages] == [
            "ImagePreprocessStage",
            "_FpgaStage",
            "DenseStage",
        ]
        assert [type(s).__name__ for s in tf_path._stages] == ["_CpuStage", "_FpgaStage", "_CpuStage"]
        pixels = np.abs(_first_stage(host, images) - _first_stage(tf_path, images)).max()
        ours, theirs = host.predict(images).outputs, tf_path.predict(images).outputs
    probabilities = np.abs(ours - theirs).max()
    print(
        f"\nmax |host - TF| over {len(images)} inputs: preprocessed {pixels:g}, probabilities {probabilities:g}"
    )
    assert pixels <= PREPROCESS_TOLERANCE
    assert probabilities <= PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))


def test_a_lowered_package_answers_an_input_bit_for_bit_whatever_its_batch(lite0_package: Path) -> None:
    # The server's dynamic batches put an input with whichever others came at the same time (and its
    # pipelined batcher prepares and completes them in two threads): its answer must not change.
    images = list(CASES.values())
    with load_pipeline(lite0_package, env={}, warmup=False) as runtime:
        together = runtime.predict(images).outputs
        staged = runtime.complete(runtime.prepare(images[::-1])).outputs[::-1]
        alone = [runtime.predict([image]).outputs[0] for image in images]
    np.testing.assert_array_equal(together, np.stack(alone))
    np.testing.assert_array_equal(staged, together)


def test_the_manifest_says_what_each_stage_needs(lite0_package: Path, tiny_package: Path) -> None:
    from fpgaserve.package import verify_package

    lite0 = verify_package(lite0_package)
    preprocess, _, classifier = lite0.pipeline
    assert isinstance(preprocess, TensorflowStageSpec) and preprocess.runtime == "host"
    assert preprocess.host == HostImagePreprocessSpec(
        op="image-preprocess",
        size=224,
        crop_padding=32,
        channel_order="rgb",
        mean=(127.0,) * 3,
        std=(128.0,) * 3,
    )
    assert classifier.kind == "keras" and isinstance(classifier.host, HostDenseSpec)
    assert classifier.host.activation == "softmax"
    assert classifier.host.weights in {m.path for m in lite0.stage_members(classifier)}
    # The tiny pipeline: fpgaserve's preprocess_array is lowered, the user's own classifier is not,
    # and its manifest entry reads as before (no runtime field: tensorflow).
    tiny = verify_package(tiny_package)
    assert [getattr(s, "runtime", None) for s in tiny.pipeline] == ["host", None, "tensorflow"]
    assert "runtime" not in json.loads(tiny.to_json())["pipeline"][2]


def test_save_without_host_lowering(tmp_path: Path, tiny_models: tuple[Any, Any]) -> None:
    from tests.runtime.tiny import tiny_definition

    info = tiny_definition(*tiny_models).save(tmp_path / "old.zip", host_lowering=False)
    assert '"runtime"' not in info.manifest.to_json() and '"host"' not in info.manifest.to_json()
    with load_pipeline(info.path, env={}, warmup=False) as runtime:
        assert type(runtime._stages[0]).__name__ == "_CpuStage"
        assert runtime.jpeg_draft is False


def _export(stage: Any, directory: Path) -> dict[str, Any]:
    from fpgaserve.sdk.graph_mode import eager

    with eager():
        return stage.export(directory).extra


def test_only_fpgaserves_own_constructions_are_lowered(
    tmp_path: Path, tiny_models: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf

    from fpgaserve.sdk import KerasStage, TensorflowStage, preprocess_array
    from fpgaserve.sdk import host_lowering as lowering

    spec = tf.TensorSpec([None], tf.string, name="images")

    def stage(fn: Any) -> TensorflowStage:
        return TensorflowStage(fn, input_signature=spec)

    own = _export(stage(lambda x: preprocess_array(x, model="none", size=8)), tmp_path / "own")
    assert own["runtime"] == "host" and own["host"]["size"] == 8
    # Look-alikes: something after it, something before it, a user's dense softmax.
    after = _export(stage(lambda x: preprocess_array(x, model="none", size=8) * 1.0), tmp_path / "after")
    before = _export(
        stage(lambda x: preprocess_array(tf.strings.regex_replace(x, "^", ""), model="none", size=8)),
        tmp_path / "before",
    )
    user = _export(KerasStage(tiny_models[1]), tmp_path / "user")
    assert "runtime" not in after and "runtime" not in before and "runtime" not in user
    assert not (tmp_path / "user" / lowering.HOST_WEIGHTS).exists()

    # A recorded construction whose lowering disagrees with its graph is not lowered (the check
    # against TensorFlow on probe images at package time).
    real = lowering.preprocess_lowering

    def wrong(**kwargs: Any) -> lowering.Lowering:
        found = real(**kwargs)
        return lowering.Lowering({**found.host, "mean": [1.0, 2.0, 3.0]})

    lowering.preprocess_lowering = wrong  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING, logger="fpgaserve.sdk.host_lowering"):
            checked = _export(stage(lambda x: preprocess_array(x, model="none", size=8)), tmp_path / "wrong")
    finally:
        lowering.preprocess_lowering = real
    assert "runtime" not in checked
    assert "not lowering a stage: differs from TensorFlow" in caplog.text


def test_a_zoo_classifier_is_lowered_with_its_weights(tmp_path: Path) -> None:
    from fpgaserve.sdk import KerasStage, QuantizedEfficientNetLite0

    classifier = QuantizedEfficientNetLite0(tmp_path / "models").classifier
    extra = _export(KerasStage(classifier), tmp_path / "classifier")
    assert extra["host"] == {"op": "dense", "activation": "softmax", "weights": "host/dense.npz"}
    with np.load(tmp_path / "classifier" / "host" / "dense.npz", allow_pickle=False) as arrays:
        kernel, bias = classifier.get_layer("fc").get_weights()
        np.testing.assert_array_equal(arrays["kernel"], kernel)
        np.testing.assert_array_equal(arrays["bias"], bias)


@pytest.mark.parametrize("host_stages", [True, False])
def test_bad_images_give_the_same_errors(tiny_package: Path, host_stages: bool) -> None:
    good = sample_images()[0]
    with load_pipeline(tiny_package, env={}, warmup=False, host_stages=host_stages) as runtime:
        with pytest.raises(InvalidInput, match=r"^input 1: not a decodable image \(its data is damaged\)$"):
            runtime.predict([good, good[: len(good) // 3], good])
        with pytest.raises(InvalidInput, match=r"^input 2: not a decodable image"):
            runtime.predict([good, good, b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
        out = runtime.predict([good]).outputs
    assert out.shape == (1, 4)


def test_jpeg_reduction_over_the_pixel_limit() -> None:
    assert jpeg_reduction(4000, 3000, max_pixels=12_000_000) == 1
    assert jpeg_reduction(4001, 3000, max_pixels=12_000_000) == 2
    assert jpeg_reduction(9000, 9000, max_pixels=4096 * 4096) == 4  # 2250 x 2250
    assert jpeg_reduction(40000, 40000, max_pixels=4096 * 4096) is None
    big = np.zeros((1200, 1000, 3), np.uint8)
    big[:, :, 0] = np.arange(1000) % 256
    jpeg, png = _save(Image.fromarray(big), "JPEG"), _save(Image.fromarray(big), "PNG")
    limit = 400_000  # 1.2 MP over it: a JPEG decodes at 1/2 (600 x 500), a PNG is refused
    assert check_image_pixels(jpeg, index=0, max_pixels=limit, jpeg_draft=True) == 300_000
    with pytest.raises(InvalidInput, match="exceeds the limit of 400000 pixels"):
        check_image_pixels(jpeg, index=0, max_pixels=limit)  # a runtime that cannot reduce
    with pytest.raises(InvalidInput, match="input 3: image of 1000x1200 = 1200000 pixels exceeds"):
        check_image_pixels(png, index=3, max_pixels=limit, jpeg_draft=True)
    assert decode_rgb(jpeg, index=0, max_pixels=limit).shape == (600, 500, 3)
    assert decode_rgb(jpeg, index=0).shape == (1200, 1000, 3)  # within the default limit: whole


def test_the_tiny_package_decodes_reduced_jpegs(tiny_package: Path) -> None:
    photo = encode(np.tile(skimage.data.chelsea(), (3, 3, 1)), "jpeg")  # 900 x 1353
    with load_pipeline(tiny_package, env={}, warmup=False, max_image_pixels=400_000) as runtime:
        assert runtime.jpeg_draft is True
        stage = runtime._stages[0]
        assert stage.preprocess_one(photo, index=0).shape == (SIZE, SIZE, 3)
        assert decode_rgb(photo, index=0, max_pixels=stage.max_pixels).shape == (450, 677, 3)
