"""Tests for fpgaserve.sdk.efficientnet_lite: the float Keras EfficientNet-Lite0 with its real ImageNet
weights classifies scikit-image's bundled photos correctly, uses only layers the compiler maps, and its
numpy and TensorFlow preprocessing agree."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import skimage.data

from fpgaserve.sdk.efficientnet_lite import (
    FEATURE_DIM,
    INPUT_SIZE,
    NUM_CLASSES,
    build_efficientnet_lite0,
    preprocess_efficientnet_lite0,
)
from fpgaserve.sdk.labels import imagenet_labels
from fpgaserve.sdk.torch_weights import TorchFormatError

_COMPILER_LAYERS = {
    "InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add", "ZeroPadding2D",
    "GlobalAveragePooling2D", "Dropout", "Dense",
}  # fmt: skip
_CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0() -> tuple[keras.Model, keras.Model]:
    return build_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "rocket")}


def _top(probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    labels = imagenet_labels()
    return [(labels[i], float(probs[i])) for i in np.argsort(probs)[::-1][:k]]


@pytest.mark.parametrize(
    ("photo", "expected", "min_prob"),
    [
        ("chelsea", _CATS, 0.3),  # tiger cat 0.42, Egyptian cat 0.33, tabby 0.17
        ("coffee", {"espresso", "cup", "coffee mug"}, 0.5),  # espresso 0.94
        ("rocket", {"missile", "projectile, missile", "space shuttle"}, 0.1),  # missile 0.22
    ],
)
def test_classifies_scikit_image_photos(
    lite0: Any, photos: dict[str, np.ndarray], photo: str, expected: set[str], min_prob: float
) -> None:
    featurizer, classifier = lite0
    probs = classifier(featurizer(preprocess_efficientnet_lite0(photos[photo]))).numpy()[0]
    (label, prob), *_ = _top(probs, 5)
    assert label in expected and prob >= min_prob, _top(probs, 5)


def test_cat_classes_dominate_chelsea(lite0: Any, photos: dict[str, np.ndarray]) -> None:
    featurizer, classifier = lite0
    probs = classifier(featurizer(preprocess_efficientnet_lite0(photos["chelsea"]))).numpy()[0]
    labels = imagenet_labels()
    assert sum(probs[labels.index(c)] for c in _CATS) > 0.8


def test_shapes_and_probabilities(lite0: Any) -> None:
    featurizer, classifier = lite0
    images = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    features = featurizer(preprocess_efficientnet_lite0(images)).numpy()
    assert featurizer.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert features.shape == (2, FEATURE_DIM) and features.min() >= 0  # pooled ReLU6 outputs
    probs = classifier(features).numpy()
    assert probs.shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_uses_only_layers_the_compiler_maps(lite0: Any) -> None:
    featurizer, classifier = lite0
    used = {type(layer).__name__ for model in (featurizer, classifier) for layer in model.layers}
    assert used <= _COMPILER_LAYERS
    assert all(layer.max_value == 6.0 for layer in featurizer.layers if isinstance(layer, keras.layers.ReLU))
    assert all(layer.padding == "valid" for layer in featurizer.layers if hasattr(layer, "kernel_size"))


def test_padding_follows_tensorflow_same(lite0: Any) -> None:
    featurizer, _ = lite0
    # Stride 2 pads asymmetrically (more after), as TF 'SAME' and the port's Conv2dStaticSamePadding do.
    assert featurizer.get_layer("stem_conv_pad").padding == ((0, 1), (0, 1))  # 224 -> 112, k3
    assert featurizer.get_layer("block3_dwconv_pad").padding == ((1, 2), (1, 2))  # 56 -> 28, k5
    assert featurizer.get_layer("block0_dwconv_pad").padding == ((1, 1), (1, 1))  # stride 1, k3
    assert featurizer.get_layer("block15_dwconv").output.shape[1:3] == (7, 7)


@pytest.mark.parametrize("photo", ["chelsea", "rocket"])
def test_numpy_and_tensorflow_preprocessing_agree(photos: dict[str, np.ndarray], photo: str) -> None:
    import imageio.v3 as iio

    from fpgaserve.sdk.preprocessing import preprocess_array

    image = photos[photo]
    ours = preprocess_efficientnet_lite0(image)
    # The pipeline's TensorFlow stage, fed the photo losslessly encoded as a client would send it.
    theirs = np.asarray(
        preprocess_array([iio.imwrite("<bytes>", image, extension=".png")], model="efficientnet-lite0")
    )
    assert ours.shape == theirs.shape == (1, INPUT_SIZE, INPUT_SIZE, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_preprocessing_normalises_to_inception_range() -> None:
    gray = np.full((300, 400, 3), 127, dtype=np.uint8)
    np.testing.assert_allclose(preprocess_efficientnet_lite0(gray), 0.0, atol=1e-6)
    white = np.full((2, 256, 256, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(preprocess_efficientnet_lite0(white), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        preprocess_efficientnet_lite0(gray.astype(np.float32) / 255)


def test_refuses_a_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "not-weights.pth"
    path.write_bytes(pickle.dumps({"epoch": 3}, protocol=2))
    with pytest.raises(TorchFormatError):
        build_efficientnet_lite0(path)
