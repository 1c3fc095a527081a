"""The Keras compiler: layer mapping, fusion, refusal, and numerical agreement with Keras."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.compile import compile_keras
from fpgaserve.compiler.keras_import import UnsupportedLayerError
from fpgaserve.npu.bfp import FORMATS, BfpFormat
from fpgaserve.npu.device import DeviceModel, EmulatedDevice
from fpgaserve.npu.executor import Executor
from fpgaserve.npu.program import load_program, save_program
from tests.compiler.helpers import randomize_batchnorm

# 15 mantissa bits in blocks of one: quantization error ~3e-5, so any disagreement beyond that is a
# graph-translation bug, not numerics.
NEAR_FLOAT = BfpFormat("near-float", block_size=1, exponent_bits=8, mantissa_bits=15)
BIG_DEVICE = DeviceModel("big", weight_memory_bytes=1 << 30, matrix_units=6, native_dim=128, vector_lanes=1024,
                         clock_mhz=300.0)  # fmt: skip


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def run(program: Any, x: np.ndarray) -> np.ndarray:
    with Executor(program, device=EmulatedDevice(BIG_DEVICE)) as ex:
        out: np.ndarray = ex.run(x).outputs
        return out


def every_layer_model(keras: Any) -> Any:
    """A small network using every supported layer type, with odd sizes and both 'same' and 'valid'."""
    L = keras.layers
    inp = keras.Input((19, 17, 3))
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(inp)
    x = L.Conv2D(12, 3, strides=2, padding="valid", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6)(x)
    y = L.DepthwiseConv2D(5, strides=1, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(12, 1, padding="same", activation="relu")(y)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.Conv2D(20, 3, strides=2, padding="same")(x)
    x = L.ReLU()(x)
    x = L.AveragePooling2D(2, strides=1)(x)
    x = L.Dropout(0.5)(x)
    a = L.GlobalAveragePooling2D()(x)
    b = L.Flatten()(x)
    b = L.Dense(20, activation="relu")(b)
    x = L.Add()([a, b])
    x = L.Reshape((4, 5))(x)
    x = L.Flatten()(x)
    out = L.Dense(7)(x)
    model = keras.Model(inp, out)
    randomize_batchnorm(model)
    return model


def test_every_supported_layer_matches_keras(keras: Any) -> None:
    model = every_layer_model(keras)
    x = np.random.default_rng(1).normal(size=(3, 19, 17, 3)).astype(np.float32)
    program = compile_keras(model, fmt=NEAR_FLOAT)
    np.testing.assert_allclose(run(program, x), model(x, training=False).numpy(), rtol=2e-3, atol=2e-3)


def test_fusion_folds_batchnorm_padding_and_activations(keras: Any) -> None:
    kinds = [op.kind for op in compile_keras(every_layer_model(keras)).ops]
    assert "scale_shift" not in kinds  # both BatchNorms folded into their convs
    assert "pad" not in kinds  # ZeroPadding2D folded into the strided conv's window
    assert "activation" not in kinds  # every activation fused into its producer


def test_batchnorm_after_activation_stays_a_vector_op(keras: Any) -> None:
    L = keras.layers
    inp = keras.Input((8, 8, 4))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = L.BatchNormalization()(x)  # cannot fold: the conv's output is not linear
    model = keras.Model(inp, out)
    randomize_batchnorm(model)
    program = compile_keras(model, fmt=NEAR_FLOAT)
    assert [op.kind for op in program.ops] == ["conv2d", "scale_shift"]
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(run(program, x), model(x, training=False).numpy(), rtol=1e-3, atol=1e-3)


def test_bfp_program_stays_close_to_float(keras: Any) -> None:
    model = every_layer_model(keras)
    x = np.random.default_rng(3).normal(size=(4, 19, 17, 3)).astype(np.float32)
    ref = model(x, training=False).numpy()
    errors = {
        name: 1 - cosine(run(compile_keras(model, fmt=FORMATS[name]), x), ref)
        for name in ("msfp16", "msfp12")
    }
    assert errors["msfp16"] < 1e-3
    assert errors["msfp16"] < errors["msfp12"]  # more mantissa bits, less error


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (lambda L: L.Conv2D(4, 3, activation="swish"), "activation '(swish|silu)'"),
        (lambda L: L.Conv2D(4, 3, dilation_rate=2), "dilation"),
        (lambda L: L.LeakyReLU(), "type LeakyReLU"),
        (lambda L: L.DepthwiseConv2D(3, depth_multiplier=2), "depth_multiplier"),
    ],
)
def test_unsupported_layers_are_refused_by_name_and_type(keras: Any, layer: Any, message: str) -> None:
    inp = keras.Input((8, 8, 3))
    bad = layer(keras.layers)
    model = keras.Model(inp, bad(inp))
    with pytest.raises(UnsupportedLayerError, match=message) as err:
        compile_keras(model)
    assert bad.name in str(err.value)


def test_sequential_models_compile(keras: Any) -> None:
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3), keras.layers.Flatten()])
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        run(compile_keras(model, fmt=NEAR_FLOAT), x), model(x).numpy(), rtol=1e-3, atol=1e-3
    )


def test_undefined_input_shape_needs_input_shape(keras: Any) -> None:
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 1)(inp)))
    with pytest.raises(ValueError, match="input_shape"):
        compile_keras(model)
    assert compile_keras(model, input_shape=(5, 5, 3)).input_shape == (5, 5, 3)


def test_compiled_program_round_trips_through_a_file(keras: Any, tmp_path: Path) -> None:
    model = every_layer_model(keras)
    program = compile_keras(model)
    save_program(program, tmp_path / "p.fpga")
    loaded = load_program(tmp_path / "p.fpga")
    x = np.random.default_rng(5).normal(size=(2, 19, 17, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(loaded, x), run(program, x))


def test_depthwise_epilogue_quantization_changes_no_bit(keras: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The executor lets a depthwise conv quantize its output for a sole pointwise consumer; the
    # result must be exactly what the pointwise conv would have computed quantizing it itself.
    from fpgaserve.npu import lowering

    program = compile_keras(every_layer_model(keras))
    assert lowering._prequantized_tensors(program)  # the model has such a pair
    x = np.random.default_rng(6).normal(size=(2, 19, 17, 3)).astype(np.float32)
    fused = run(program, x)
    monkeypatch.setattr(lowering, "_prequantized_tensors", lambda program: {})
    np.testing.assert_array_equal(run(program, x), fused)
