"""Empirical bias correction: it removes the channel-mean shift quantization adds, deterministically,
and the corrected biases travel with the program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.bias_correction import correct_biases
from fpgaserve.compiler.compile import compile_graph, compile_keras
from fpgaserve.compiler.keras_import import Graph, GraphOp
from fpgaserve.compiler.precision import AccuracyBudget, search_formats
from fpgaserve.npu.bfp import FORMATS, BfpFormat
from fpgaserve.npu.program import load_program, save_program
from tests.compiler.test_compile import run

# Truncation toward zero on positive inputs and weights: every product is too small, so every
# channel mean drops (a planted shift, far above the rounding noise).
TRUNCATING = BfpFormat("trunc4", block_size=16, exponent_bits=8, mantissa_bits=3, rounding="zero")
NEAR_FLOAT = BfpFormat("near", block_size=1, exponent_bits=8, mantissa_bits=15)


def chain(activation: str) -> Graph:
    """input (6, 6, 8) -> depthwise 3x3 (``activation``; quantizes its output for the pointwise conv)
    -> pointwise conv 8 -> 5 (linear)."""
    rng = np.random.default_rng(7)
    dw = GraphOp(
        "depthwise_conv2d", "dw", ["x"], "h", {"strides": [1, 1], "pads": [1, 1, 1, 1], "activation": activation},
        rng.uniform(0.1, 1.0, (3, 3, 8)).astype(np.float32), rng.uniform(-0.5, 0.5, 8).astype(np.float32),
    )  # fmt: skip
    pw = GraphOp(
        "conv2d", "pw", ["h"], "y", {"strides": [1, 1], "pads": [0, 0, 0, 0], "activation": "linear"},
        rng.uniform(0.1, 1.0, (1, 1, 8, 5)).astype(np.float32), None,
    )  # fmt: skip
    return Graph("x", (6, 6, 8), "y", [dw, pw], {"x": (6, 6, 8), "h": (6, 6, 8), "y": (6, 6, 5)})


def positive_batch(n: int = 20, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 3.0, (n, 6, 6, 8)).astype(np.float32)


def channel_means(program: Any, x: np.ndarray) -> np.ndarray:
    out = run(program, x)
    return np.asarray(out.reshape(-1, out.shape[-1]).mean(axis=0, dtype=np.float64))


def test_the_correction_removes_a_planted_channel_mean_shift() -> None:
    graph, x = chain("linear"), positive_batch()
    float_means = channel_means(compile_graph(graph, fmt=NEAR_FLOAT, name="f"), x)
    plain = compile_graph(graph, fmt=TRUNCATING, name="q")
    shift = channel_means(plain, x) - float_means
    assert np.all(shift < -0.05 * np.abs(float_means))  # truncation: every channel far too low
    biases = correct_biases(graph, formats={}, base=TRUNCATING, calibration=x)
    assert set(biases) == {"dw", "pw"}  # the pointwise conv had no bias: it gets one
    corrected = compile_graph(graph, fmt=TRUNCATING, name="q", biases=biases)
    left = channel_means(corrected, x) - float_means
    assert np.max(np.abs(left)) < 0.01 * np.max(np.abs(shift))
    # Only the biases changed: the same packed weights, the same formats.
    for name in ("dw", "pw"):
        assert np.array_equal(corrected.weights[name].mantissas, plain.weights[name].mantissas)


def test_the_correction_is_measured_before_the_activation() -> None:
    """The fused activation does not enter the correction: with ReLU6 after the depthwise conv its
    bias moves exactly as without it (the same pre-activation means; the consumer then sees other
    inputs, so only the first op is compared)."""
    x = positive_batch()
    linear = correct_biases(chain("linear"), formats={}, base=TRUNCATING, calibration=x)
    clipped = correct_biases(chain("relu6"), formats={}, base=TRUNCATING, calibration=x)
    assert np.array_equal(linear["dw"], clipped["dw"])
    graph = chain("relu6")
    assert not np.allclose(clipped["dw"], graph.ops[0].bias)  # it did move


def test_the_correction_is_deterministic_and_the_program_file_keeps_it(tmp_path: Path) -> None:
    graph, x = chain("relu6"), positive_batch()
    a = correct_biases(graph, formats={"pw": FORMATS["msfp16"]}, base=TRUNCATING, calibration=x)
    b = correct_biases(graph, formats={"pw": FORMATS["msfp16"]}, base=TRUNCATING, calibration=x)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    program = compile_graph(graph, fmt=TRUNCATING, name="q", biases=a, metadata={"biasCorrection": {"n": 20}})
    save_program(program, tmp_path / "p.fpga")
    loaded = load_program(tmp_path / "p.fpga")
    assert all(np.array_equal(loaded.biases[k], a[k]) for k in a)
    assert loaded.metadata["biasCorrection"] == {"n": 20}
    assert np.array_equal(run(loaded, x), run(program, x))


def test_compile_keras_corrects_uniform_and_searched_programs(model: Any) -> None:
    calib = np.random.default_rng(3).normal(size=(10, 19, 17, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="calibration"):
        compile_keras(model, fmt=FORMATS["msfp16"], bias_correction=True)
    plain = compile_keras(model, fmt=FORMATS["msfp16"])
    corrected = compile_keras(model, fmt=FORMATS["msfp16"], calibration=calib, bias_correction=True)
    assert corrected.metadata["biasCorrection"] == {"calibrationExamples": 10}
    assert any(not np.array_equal(corrected.biases[k], plain.biases.get(k)) for k in corrected.biases)
    # The search scores corrected variants: what it reports is what the corrected program does.
    budget = AccuracyBudget.parse("cosine>=0.99")
    from fpgaserve.compiler.budget import Reference
    from fpgaserve.compiler.fuse import optimize
    from fpgaserve.compiler.keras_import import import_keras

    result = search_formats(
        optimize(import_keras(model)), model=model, budget=budget, calibration=calib, name="m",
        sensitivity_examples=5, bias_correction=True,
    )  # fmt: skip
    assert result.program.metadata["biasCorrection"] == {"calibrationExamples": 10}
    out, ref = run(result.program, calib), np.asarray(model(calib, training=False))
    assert Reference(ref, head=None).score(out).value(budget) == pytest.approx(result.score, abs=1e-6)
