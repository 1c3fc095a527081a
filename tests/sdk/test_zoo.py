"""The model zoo: notebook names, program caching, preprocessing, and the offline failure path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data

from fpgaserve.npu import EmulatedDevice, Executor
from fpgaserve.sdk import (
    QuantizedEfficientNetLite0,
    QuantizedResnet50,
    Resnet50,
    WeightsUnavailableError,
    imagenet_labels,
)
from fpgaserve.sdk.zoo import get_zoo_model

CAT_LABELS = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat, Siamese"}


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> QuantizedEfficientNetLite0:
    return QuantizedEfficientNetLite0(tmp_path_factory.mktemp("models"))


def test_chelsea_is_a_cat_in_float_and_on_the_fpga(lite0: QuantizedEfficientNetLite0) -> None:
    x = lite0.preprocess(skimage.data.chelsea())
    labels = imagenet_labels()
    float_probs = lite0.classifier(lite0.featurizer(x)).numpy()[0]
    with Executor(lite0.program, device=EmulatedDevice()) as fpga:
        result = fpga.run(x)
    fpga_probs = lite0.classifier(result.outputs).numpy()[0]
    assert labels[int(float_probs.argmax())] in CAT_LABELS
    assert labels[int(fpga_probs.argmax())] in CAT_LABELS
    assert result.device_seconds > 0


# The bundled real photos of bench/fpga.py, without its crops, flips and scales.
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "hubble_deep_field", "immunohistochemistry",
    "retina", "moon", "brick", "grass", "gravel", "page", "text",
)  # fmt: skip


def test_default_format_keeps_the_float_answers(lite0: QuantizedEfficientNetLite0) -> None:
    # The reason int12-bfp is the default (docs/numerics.md); MSFP16 on the same inputs must be
    # measurably further from float, or the comparison proves nothing.
    images = [getattr(skimage.data, name)() for name in PHOTOS]
    x = np.concatenate(
        [lite0.preprocess(np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]) for im in images]
    )
    ref = lite0.featurizer(x).numpy()

    def run(fmt: str) -> tuple[np.ndarray, np.ndarray]:
        program = QuantizedEfficientNetLite0(lite0.model_path, fmt=fmt).program
        with Executor(program, device=EmulatedDevice()) as fpga:
            feats = np.concatenate([fpga.run(x[i : i + 8]).outputs for i in range(0, len(x), 8)])
        cos = (feats * ref).sum(1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref, axis=1)
        return cos, lite0.classifier(feats).numpy().argmax(1)

    assert lite0.fmt.name == "int12-bfp"
    default_cos, default_top = run("int12-bfp")
    msfp16_cos, _ = run("msfp16")
    assert (default_top == lite0.classifier(ref).numpy().argmax(1)).all()
    assert default_cos.min() > 0.999
    assert msfp16_cos.mean() < 0.995 < default_cos.mean()


def test_compiled_program_is_cached_in_model_path(lite0: QuantizedEfficientNetLite0) -> None:
    program = lite0.program
    assert lite0.program_path.is_file()
    again = QuantizedEfficientNetLite0(lite0.model_path).program  # loads, does not recompile
    assert again is not program
    assert [op.name for op in again.ops] == [op.name for op in program.ops]
    assert lite0.version.startswith("efficientnet-lite0-")


def test_get_zoo_model_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="the zoo has: efficientnet-lite0, resnet50"):
        get_zoo_model("vgg16")


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        QuantizedResnet50(tmp_path, weights=str(tmp_path / "nope.h5"))


def test_imagenet_download_failure_names_the_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    def offline(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights") == "imagenet":
            raise OSError("URL fetch failure: no network")
        raise AssertionError("only the imagenet path is expected here")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(WeightsUnavailableError, match=r"weights='random'.*QuantizedEfficientNetLite0"):
        _ = QuantizedResnet50(tmp_path / "offline-test").featurizer


@pytest.mark.slow
def test_resnet50_random_weights_and_default_classifier(tmp_path: Path) -> None:
    model = QuantizedResnet50(tmp_path, is_frozen=True, weights="random")
    assert model.featurizer.output.shape[-1] == 2048
    assert not model.featurizer.trainable
    features = np.random.default_rng(0).random((2, 2048)).astype(np.float32)
    classifier_input, classifier_output = Resnet50.get_default_classifier(None, tmp_path, weights="random")
    assert classifier_input.shape[-1] == 2048 and classifier_output.shape[-1] == 1000
    probs = model.classifier(features).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Same seed, same weights: the classifier of a second instance is the same model.
    assert QuantizedResnet50(tmp_path, weights="random").classifier is model.classifier


def test_resnet50_preprocessing_is_caffe_style() -> None:
    image = np.full((300, 400, 3), (200, 100, 50), np.uint8)
    x = QuantizedResnet50.preprocess(QuantizedResnet50.__new__(QuantizedResnet50), image)
    assert x.shape == (1, 224, 224, 3)
    np.testing.assert_allclose(x[0, 100, 100], [50 - 103.939, 100 - 116.779, 200 - 123.68], atol=1e-3)


def test_first_use_inside_a_tf_function_keeps_the_real_weights(tmp_path: Path) -> None:
    import tensorflow as tf

    from fpgaserve.sdk import quantized_model

    quantized_model._CACHE.clear()  # force a fresh build inside the trace below
    model = QuantizedEfficientNetLite0(tmp_path)
    x = model.preprocess(skimage.data.coffee())
    traced = tf.function(lambda t: model.featurizer(t, training=False))(x).numpy()
    eager = model.featurizer(x).numpy()
    np.testing.assert_allclose(traced, eager, rtol=1e-4, atol=1e-4)
    assert imagenet_labels()[int(model.classifier(eager).numpy().argmax())] == "espresso"


def test_the_sdk_and_the_cli_keep_programs_in_one_default_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's Python example and `fpgaserve classify` compiled the same program twice, into
    # ~/models and ~/.cache/fpgaserve/models.
    from fpgaserve.cli.main import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    sdk = QuantizedEfficientNetLite0().model_path
    for argv in (["classify", "sample:chelsea"], ["quickstart"], ["package", "efficientnet-lite0"]):
        args = build_parser(only=argv[0]).parse_args(argv)
        assert Path(args.model_path).expanduser() == sdk, argv
    assert sdk.is_relative_to(tmp_path)


def test_a_program_under_the_old_default_is_loaded_not_compiled_again(
    lite0: QuantizedEfficientNetLite0, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = lite0.program_path
    lite0.program  # noqa: B018  (compiled into lite0.model_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    old = tmp_path / "models" / compiled.relative_to(lite0.model_path)
    old.parent.mkdir(parents=True)
    old.write_bytes(compiled.read_bytes())

    import fpgaserve.compiler.compile

    def no_compiling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled again")

    monkeypatch.setattr(fpgaserve.compiler.compile, "compile_keras", no_compiling)
    model = QuantizedEfficientNetLite0()  # the default: ~/.cache/fpgaserve/models, empty
    assert not model.program_path.exists() and model.program_cached
    assert model.program.fmt == lite0.fmt
    # An explicit path wins: nothing there, so it would compile.
    assert not QuantizedEfficientNetLite0(tmp_path / "elsewhere").program_cached
