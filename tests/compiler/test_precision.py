"""Mixed precision: per-layer formats in programs, and the search for them under an accuracy budget."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.budget import Reference
from fpgaserve.compiler.compile import compile_graph, compile_keras
from fpgaserve.compiler.evaluator import Evaluator
from fpgaserve.compiler.keras_import import Graph
from fpgaserve.compiler.precision import AccuracyBudget, BudgetError, search_formats
from fpgaserve.npu import kernels_numba, kernels_numpy
from fpgaserve.npu.bfp import FORMATS, BfpFormat, quantize
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL
from fpgaserve.npu.lowering import Env, _prequantized_tensors, lower_program
from fpgaserve.npu.program import (
    MATRIX_OPS,
    MIXED_FORMAT_VERSION,
    PROGRAM_FORMAT_VERSION,
    load_program,
    reduction_axis,
    save_program,
)
from tests.compiler.test_compile import run
from tests.npu.helpers import assert_bits_equal

WIDE, NARROW = FORMATS["int12-bfp"], FORMATS["msfp12"]


def matrix_ops(graph: Graph) -> list[str]:
    return [g.name for g in graph.ops if g.kind in MATRIX_OPS]


def mixed_formats(graph: Graph) -> dict[str, BfpFormat]:
    """A different preset per matrix op, cycling, so that every neighbour pair differs."""
    presets = [FORMATS[n] for n in ("msfp12", "int7-bfp", "ms-fp9", "msfp16", "ms-fp8")]
    return {name: presets[i % len(presets)] for i, name in enumerate(matrix_ops(graph))}


def calibration(n: int = 12, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 19, 17, 3)).astype(np.float32)


def test_each_layer_is_bit_identical_to_the_reference_quantizer_in_its_own_format(graph: Graph) -> None:
    formats = mixed_formats(graph)
    program = compile_graph(graph, fmt=WIDE, name="mixed", layer_formats=formats)
    prequantized = _prequantized_tensors(program)
    assert prequantized, "the model has a depthwise conv feeding a pointwise one"
    floats = {g.name: g for g in graph.ops}
    env: Env = {program.input_name: calibration(2)}
    steps = lower_program(program, kernels=kernels_numba)
    for op, step in zip(program.ops, steps, strict=True):
        inputs = {name: env[name].copy() for name in op.inputs}
        step.run(env)
        if op.kind not in MATRIX_OPS:
            continue
        fmt = formats[op.name]
        assert program.format_of(op.name) == fmt
        # Weights: exactly the reference quantizer's, in this layer's format.
        weight = floats[op.name].weight
        assert weight is not None
        if op.kind == "depthwise_conv2d":
            weight = weight.reshape(-1, weight.shape[2])
        assert_bits_equal(
            program.dequantized_weight(op.name).reshape(weight.shape),
            quantize(weight, fmt, axis=reduction_axis(op.kind)),
            op.name,
        )
        # Outputs: the op alone in a one-format program of its format, on the reference (numpy) kernels.
        alone = Graph(op.inputs[0], graph.shapes[op.inputs[0]], op.output, [floats[op.name]], graph.shapes)
        ref_program = compile_graph(alone, fmt=fmt, name=op.name)
        (ref_step,) = lower_program(ref_program, kernels=kernels_numpy)
        ref_env: Env = dict(inputs)
        ref_step.run(ref_env)
        expected = ref_env[op.output]
        if op.output in prequantized:  # quantized for its pointwise consumer, in the consumer's format
            assert prequantized[op.output] != fmt
            expected = quantize(expected, prequantized[op.output], axis=-1)
        assert_bits_equal(env[op.output], expected, op.name)


def test_cycles_and_weight_memory_follow_each_layers_format(graph: Graph) -> None:
    wide = compile_graph(graph, fmt=WIDE, name="wide")
    first = matrix_ops(graph)[0]
    mixed = compile_graph(graph, fmt=WIDE, name="mixed", layer_formats={first: NARROW})
    narrow = compile_graph(graph, fmt=NARROW, name="narrow")
    assert mixed.op_weight_bytes(first) == narrow.op_weight_bytes(first) < wide.op_weight_bytes(first)
    assert mixed.weight_bytes == wide.weight_bytes - wide.op_weight_bytes(first) + narrow.op_weight_bytes(
        first
    )

    def cycles(program: Any) -> list[int]:
        return [s.cycles(1, DEFAULT_DEVICE_MODEL) for s in lower_program(program, kernels=kernels_numpy)]

    index = [op.name for op in wide.ops].index(first)
    c_wide, c_mixed, c_narrow = cycles(wide), cycles(mixed), cycles(narrow)
    assert c_mixed[index] == c_narrow[index] < c_wide[index]  # 4 passes of 12-bit elements, 1 of 4-bit
    assert c_mixed[:index] + c_mixed[index + 1 :] == c_wide[:index] + c_wide[index + 1 :]


def test_mixed_programs_round_trip_as_version_2_and_uniform_ones_stay_version_1(
    graph: Graph, tmp_path: Path
) -> None:
    uniform = compile_graph(graph, fmt=WIDE, name="uniform")
    mixed = compile_graph(graph, fmt=WIDE, name="mixed", layer_formats=mixed_formats(graph))
    save_program(uniform, tmp_path / "u.fpga")
    save_program(mixed, tmp_path / "m.fpga")
    u, m = load_program(tmp_path / "u.fpga"), load_program(tmp_path / "m.fpga")
    assert (u.version, u.is_mixed, m.version, m.is_mixed) == (
        PROGRAM_FORMAT_VERSION,
        False,
        MIXED_FORMAT_VERSION,
        True,
    )
    assert m.layer_formats() == {k: f.name for k, f in mixed_formats(graph).items()}
    assert m.summary()["format"] == "mixed" and u.summary()["format"] == WIDE.name
    x = calibration(2)
    np.testing.assert_array_equal(run(m, x), run(mixed, x))
    # Naming a format for an op that is not a matrix op is refused.
    with pytest.raises(ValueError, match="not matrix ops"):
        compile_graph(graph, fmt=WIDE, name="bad", layer_formats={"nope": NARROW})


def test_a_vector_op_with_a_format_is_refused() -> None:
    from fpgaserve.npu.program import Op, ProgramFormatError

    with pytest.raises(ProgramFormatError, match="vector units"):
        Op("add", "a", ("x", "y"), "z", {"format": asdict(NARROW)})


@pytest.mark.parametrize("text", ["cosine>=0.995", "expected-top1>=90%"])
def test_the_search_meets_its_budget_cheaper_than_the_widest_format_and_deterministically(
    graph: Graph, model: Any, text: str
) -> None:
    budget = AccuracyBudget.parse(text)
    calib = calibration()
    results = [
        search_formats(graph, model=model, budget=budget, calibration=calib, name="m", sensitivity_examples=5)
        for _ in range(2)
    ]
    a, b = results
    assert a.layer_formats == b.layer_formats and a.score == b.score and a.metrics == b.metrics
    assert a.score >= budget.threshold
    assert set(a.layer_formats) == set(matrix_ops(graph))
    assert len(set(a.layer_formats.values())) > 1 or "int12-bfp" not in a.layer_formats.values()
    wide = compile_graph(graph, fmt=WIDE, name="wide")
    assert a.program.weight_bytes < wide.weight_bytes
    # What the search reports is what the program does: rerun it against float (a fresh executor,
    # the whole network at once, examples in their own order).
    out, ref = run(a.program, calib), np.asarray(model(calib, training=False))
    assert Reference(ref, head=None).score(out).value(budget) == pytest.approx(a.score, abs=1e-6)
    assert a.program.metadata["precision"]["budget"] == str(budget)


def test_an_incremental_run_is_bit_identical_to_a_whole_run(graph: Graph) -> None:
    """A variant restarted from its first changed op (on the kept activations of another variant)
    gives exactly what running it from the input gives, whichever op changed."""
    calib = calibration(10)
    reference = Reference(calib.reshape(10, -1)[:, :7].copy(), head=None)  # only the shape matters here
    ev = Evaluator(graph, reference=reference, calibration=calib, base=WIDE, name="m", metadata={})
    try:
        base = ev.run(dict.fromkeys(matrix_ops(graph), WIDE), n=10, keep=True)
        restarts = []
        for layer, fmt in mixed_formats(graph).items():
            formats = {**base.formats, layer: fmt}
            before = ev.op_steps
            part = ev.run(formats, n=10, since=base, keep=True)
            restarts.append(len(graph.ops) - (ev.op_steps - before) // 10)
            whole = ev.run(formats, n=10, keep=True)
            for e_part, e_whole in zip(part.envs, whole.envs, strict=True):
                assert_bits_equal(e_part[graph.output_name], e_whole[graph.output_name], layer)
            assert part.score == whole.score
    finally:
        ev.close()
    # The first conv restarts at the input; a depthwise conv at its input's producer (it quantizes
    # its output for its pointwise consumer, whose format may change); later ops later.
    assert restarts[0] == 0 and restarts == sorted(restarts) and restarts[-1] > 0


def test_a_budget_that_cannot_be_met_says_so_and_names_the_limiting_layers(graph: Graph, model: Any) -> None:
    narrow_only = (FORMATS["ms-fp8"], FORMATS["msfp12"])  # the widest candidate is 4-bit
    with pytest.raises(BudgetError, match=r"cannot be met.*msfp12.*limit") as info:
        compile_keras(
            model, budget=AccuracyBudget.parse("cosine>=0.99999"), calibration=calibration(),
            candidates=narrow_only,
        )  # fmt: skip
    assert info.value.limiting and set(info.value.limiting) <= set(matrix_ops(graph))
    assert info.value.score < 0.99999


def test_a_calibration_batch_of_the_wrong_shape_is_refused(graph: Graph, model: Any) -> None:
    with pytest.raises(ValueError, match="calibration batch has shape"):
        search_formats(
            graph, model=model, budget=AccuracyBudget.parse("top1>=90%"),
            calibration=np.zeros((2, 8, 8, 3), np.float32), name="m",
        )  # fmt: skip
