"""Weight adaptation: channel permutation (exact, and it lowers the BFP error where channel scales
differ) and the layer-wise refit (it lowers each op's error on its quantized inputs), both
deterministic, and how compile_keras takes them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.adapt import adapt_weights
from fpgaserve.compiler.compile import compile_graph, compile_keras
from fpgaserve.compiler.keras_import import Graph, GraphOp
from fpgaserve.compiler.permute import chains, permute, streams
from fpgaserve.npu.bfp import FORMATS, BfpFormat
from fpgaserve.npu.formats import Precision
from tests.compiler.test_compile import run

NEAR_FLOAT = BfpFormat("near", block_size=1, exponent_bits=8, mantissa_bits=15)
INT12, MSFP16 = FORMATS["int12-bfp"], FORMATS["msfp16"]
PAIR = Precision(INT12, MSFP16)  # 12-bit weights, 8-bit activations: the programs adaptation is for
SCALES = np.array([10.0 ** ((3 * i) % 5 - 2) for i in range(32)], np.float32)  # 0.01..100, interleaved


def block_graph() -> Graph:
    """stem 3x3 (linear, writes a residual stream of 8 channels) -> expand 1x1 (relu6, 32 channels of
    very different scales) -> depthwise 3x3 (relu6) -> project 1x1 (linear) + stream -> head 1x1."""
    rng = np.random.default_rng(5)

    def conv(
        name: str, src: str, dst: str, k: int, cin: int, cout: int, act: str, scale: Any = 1.0
    ) -> GraphOp:
        pad = k // 2
        weight = (rng.normal(0, 1 / np.sqrt(k * k * cin), (k, k, cin, cout)) * scale).astype(np.float32)
        bias = (rng.normal(0, 0.05, cout) * scale).astype(np.float32)
        attrs = {"strides": [1, 1], "pads": [pad] * 4, "activation": act}
        return GraphOp("conv2d", name, [src], dst, attrs, weight, bias)

    dw = GraphOp(
        "depthwise_conv2d", "dw", ["e"], "d", {"strides": [1, 1], "pads": [1, 1, 1, 1], "activation": "relu6"},
        rng.uniform(0.0, 0.3, (3, 3, 32)).astype(np.float32), rng.normal(0, 0.01, 32).astype(np.float32),
    )  # fmt: skip
    ops = [
        conv("stem", "x", "s", 3, 3, 8, "linear"),
        conv("expand", "s", "e", 1, 8, 32, "relu6", SCALES / 10),
        dw,
        conv("project", "d", "p", 1, 32, 8, "linear"),
        GraphOp("add", "add", ["p", "s"], "r", {"activation": "linear"}),
        conv("head", "r", "y", 1, 8, 6, "linear"),
    ]
    # Small channels matter downstream as much as large ones (as after folded batch norms): the
    # project conv's input rows undo the planted scales.
    project = ops[3]
    assert project.weight is not None
    project.weight *= (10 / SCALES)[:, None]
    shapes = {
        t: (8, 8, c) for t, c in [("x", 3), ("s", 8), ("e", 32), ("d", 32), ("p", 8), ("r", 8), ("y", 6)]
    }
    return Graph("x", (8, 8, 3), "y", ops, shapes)


def batch(n: int = 24, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 8, 8, 3)).astype(np.float32)


def error(graph: Graph, formats: dict[str, Any], x: np.ndarray, reference: np.ndarray) -> float:
    out = run(compile_graph(graph, fmt=INT12, name="q", layer_formats=formats), x)
    return float(np.sqrt(np.mean((out - reference) ** 2)) / np.sqrt(np.mean(reference**2)))


def test_chains_and_streams_are_found_where_reordering_is_exact() -> None:
    graph = block_graph()
    assert [tuple(g.name for g in c) for c in chains(graph)] == [("expand", "dw", "project")]
    [(tensors, writers, readers)] = streams(graph)
    assert tensors == {"s", "p", "r"}
    assert sorted(g.name for g in writers) == ["project", "stem"]
    assert sorted(g.name for g in readers) == ["expand", "head"]
    # A stream that is the graph's output, or that reads through an activation, is left alone.
    relu = block_graph()
    relu.ops[4].attrs["activation"] = "relu"
    assert streams(relu) == []


def test_permutation_computes_the_same_function_and_sorts_the_channels() -> None:
    graph, x = block_graph(), batch()
    permuted = permute(graph, base=INT12, calibration=x)
    near = {g.name: NEAR_FLOAT for g in graph.ops if g.weight is not None}
    before = run(compile_graph(graph, fmt=INT12, name="f", layer_formats=near), x)
    after = run(compile_graph(permuted, fmt=INT12, name="f", layer_formats=near), x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    # The expand conv's output channels now run from large to small (the planted scales, sorted).
    expand = next(g for g in permuted.ops if g.name == "expand")
    assert expand.weight is not None
    norms = np.abs(expand.weight).reshape(-1, 32).mean(axis=0)
    assert np.corrcoef(np.arange(32), np.log(norms))[0, 1] < -0.9
    original = next(g for g in graph.ops if g.name == "expand")
    assert original.weight is not None
    np.testing.assert_allclose(
        np.sort(np.abs(original.weight).reshape(-1, 32).mean(axis=0)), np.sort(norms), rtol=1e-5
    )


def test_permutation_lowers_the_error_of_8_bit_activations_and_is_deterministic() -> None:
    graph, x = block_graph(), batch()
    near = {g.name: NEAR_FLOAT for g in graph.ops if g.weight is not None}
    reference = run(compile_graph(graph, fmt=INT12, name="f", layer_formats=near), x)
    formats = {g.name: PAIR for g in graph.ops if g.kind == "conv2d"}
    permuted = permute(graph, base=INT12, calibration=x)
    plain_error, permuted_error = error(graph, formats, x, reference), error(permuted, formats, x, reference)
    assert permuted_error < 0.7 * plain_error, (plain_error, permuted_error)
    again = permute(graph, base=INT12, calibration=x)
    for a, b in zip(permuted.ops, again.ops, strict=True):
        assert (a.weight is None and b.weight is None) or np.array_equal(a.weight, b.weight)


def test_the_refit_lowers_each_ops_error_on_its_quantized_inputs_deterministically() -> None:
    graph, x = block_graph(), batch()
    formats = {g.name: PAIR for g in graph.ops if g.kind == "conv2d"}
    near = {g.name: NEAR_FLOAT for g in graph.ops if g.weight is not None}
    reference = run(compile_graph(graph, fmt=INT12, name="f", layer_formats=near), x)
    refitted = adapt_weights(
        graph, formats=formats, base=INT12, calibration=x, reference="network", ridge=1e-4
    )
    assert error(refitted, formats, x, reference) < error(graph, formats, x, reference)
    again = adapt_weights(graph, formats=formats, base=INT12, calibration=x, reference="network", ridge=1e-4)
    changed = set()
    for old, a, b in zip(graph.ops, refitted.ops, again.ops, strict=True):
        assert (a.weight is None and b.weight is None) or np.array_equal(a.weight, b.weight)
        if a.weight is not None and old.weight is not None and not np.array_equal(a.weight, old.weight):
            changed.add(a.name)
    assert changed == {"stem", "expand", "project", "head"}  # conv2d ops; the depthwise filter kept
    # A ridge of infinity-like strength keeps the trained weights.
    held = adapt_weights(graph, formats=formats, base=INT12, calibration=x, ridge=1e9)
    for old, new in zip(graph.ops, held.ops, strict=True):
        if old.weight is not None:
            np.testing.assert_allclose(new.weight, old.weight, atol=1e-6)
    with pytest.raises(ValueError, match="ridge"):
        adapt_weights(graph, formats=formats, base=INT12, calibration=x, ridge=-1.0)
    with pytest.raises(ValueError, match="empty"):
        adapt_weights(graph, formats=formats, base=INT12, calibration=x[:0])


def test_compile_keras_adapts_records_it_and_refuses_what_it_cannot_do(keras: Any) -> None:
    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3))
    s = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    e = L.Conv2D(24, 1, activation="relu6", name="expand")(s)
    d = L.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(e)
    p = L.Conv2D(8, 1, name="project")(d)
    model = keras.Model(inp, L.GlobalAveragePooling2D()(L.Add()([p, s])))
    x = np.random.default_rng(0).uniform(-1, 1, (10, 12, 12, 3)).astype(np.float32)
    a = compile_keras(model, fmt=MSFP16, calibration=x, adapt="permute+refit")
    b = compile_keras(model, fmt=MSFP16, calibration=x, adapt="permute+refit")
    assert a.metadata["weightAdaptation"]["method"] == "permute+refit"
    assert a.metadata["weightAdaptation"]["calibrationExamples"] == 10
    for name in a.weights:
        assert np.array_equal(a.weights[name].mantissas, b.weights[name].mantissas)
    float_out = np.asarray(model(x, training=False))
    permuted = compile_keras(model, fmt=NEAR_FLOAT, calibration=x, adapt="permute")
    np.testing.assert_allclose(run(permuted, x), float_out, rtol=1e-3, atol=1e-3 * np.abs(float_out).max())
    with pytest.raises(ValueError, match="permute, refit, permute\\+refit"):
        compile_keras(model, calibration=x, adapt="distill")
    with pytest.raises(ValueError, match="calibration"):
        compile_keras(model, adapt="permute")
    with pytest.raises(ValueError, match="choose one"):
        compile_keras(model, calibration=x, adapt="refit", bias_correction=True)
