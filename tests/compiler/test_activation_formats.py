"""Weights and activations in two formats per matrix op (e.g. 12-bit weights x 8-bit activations):
numerics layer by layer, cycles, the program file, and the precision search's weight/activation pairs."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.compile import compile_graph
from fpgaserve.compiler.keras_import import Graph
from fpgaserve.compiler.precision import DEFAULT_CANDIDATES, AccuracyBudget, search_formats
from fpgaserve.npu import kernels_numba, kernels_numpy
from fpgaserve.npu.bfp import FORMATS, BfpFormat, quantize
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL, DEVICE_MODELS
from fpgaserve.npu.formats import Precision, get_precision, parse_candidates
from fpgaserve.npu.lowering import Env, _prequantized_tensors, lower_program
from fpgaserve.npu.program import (
    ACTIVATION_FORMAT_VERSION,
    MATRIX_OPS,
    MIXED_FORMAT_VERSION,
    Op,
    ProgramFormatError,
    load_program,
    reduction_axis,
    save_program,
)
from tests.compiler.test_compile import run
from tests.compiler.test_precision import WIDE, calibration, matrix_ops
from tests.npu.helpers import assert_bits_equal

W12, M16, I7, M12 = FORMATS["int12-bfp"], FORMATS["msfp16"], FORMATS["int7-bfp"], FORMATS["msfp12"]
W12A8 = Precision(W12, M16)


def paired_formats(graph: Graph) -> dict[str, Precision]:
    """Weights and activations in different formats for every matrix op, wider either side, cycling so
    that a depthwise conv and its pointwise consumer differ."""
    pairs = [W12A8, Precision(M16, W12), Precision(I7, M12), Precision(M12, I7), Precision(W12, I7)]
    return {name: pairs[i % len(pairs)] for i, name in enumerate(matrix_ops(graph))}


def test_weights_and_activations_in_two_formats_are_bit_identical_layer_by_layer(graph: Graph) -> None:
    """Each op: weights exactly the reference quantizer's in its weight format; outputs exactly those of
    a one-op, one-format program in its *activation* format (numpy reference kernels) whose packed weights
    are those of a one-op program in its *weight* format."""
    formats = paired_formats(graph)
    program = compile_graph(graph, fmt=WIDE, name="paired", layer_formats=formats)
    prequantized = _prequantized_tensors(program)
    assert prequantized, "the model has a depthwise conv feeding a pointwise one"
    floats = {g.name: g for g in graph.ops}
    env: Env = {program.input_name: calibration(2)}
    for op, step in zip(program.ops, lower_program(program, kernels=kernels_numba), strict=True):
        inputs = {name: env[name].copy() for name in op.inputs}
        step.run(env)
        if op.kind not in MATRIX_OPS:
            continue
        pair = formats[op.name]
        assert program.precision_of(op.name) == pair and not pair.uniform
        assert (program.format_of(op.name), program.activation_format_of(op.name)) == (
            pair.weights,
            pair.activations,
        )
        weight = floats[op.name].weight
        assert weight is not None
        if op.kind == "depthwise_conv2d":
            weight = weight.reshape(-1, weight.shape[2])
        assert_bits_equal(
            program.dequantized_weight(op.name).reshape(weight.shape),
            quantize(weight, pair.weights, axis=reduction_axis(op.kind)),
            op.name,
        )
        alone = Graph(op.inputs[0], graph.shapes[op.inputs[0]], op.output, [floats[op.name]], graph.shapes)
        ref_program = compile_graph(alone, fmt=pair.activations, name=op.name)
        ref_program.weights[op.name] = compile_graph(alone, fmt=pair.weights, name=op.name).weights[op.name]
        (ref_step,) = lower_program(ref_program, kernels=kernels_numpy)
        ref_env: Env = dict(inputs)
        ref_step.run(ref_env)
        expected = ref_env[op.output]
        if op.output in prequantized:  # quantized for its pointwise consumer, in that consumer's activations'
            (consumer,) = [u for u in program.ops if op.output in u.inputs]
            assert prequantized[op.output] == formats[consumer.name].activations
            expected = quantize(expected, prequantized[op.output], axis=-1)
        assert_bits_equal(env[op.output], expected, op.name)


@pytest.mark.parametrize(
    ("wbits", "abits", "passes"), [(12, 8, 2), (8, 12, 2), (8, 8, 1), (12, 12, 4), (4, 12, 2), (17, 8, 3)]
)
def test_passes_multiply_the_limbs_of_both_operands(wbits: int, abits: int, passes: int) -> None:
    tiny = DEVICE_MODELS["pbs-tiny"]
    assert tiny.matrix_passes(wbits, abits) == passes
    one = tiny.matrix_cycles(rows=10, reduction=9, outputs=5) - tiny.op_overhead_cycles
    assert (
        tiny.matrix_cycles(rows=10, reduction=9, outputs=5, element_bits=wbits, activation_bits=abits)
        == one * passes + tiny.op_overhead_cycles
    )
    assert tiny.matrix_passes(wbits) == tiny.matrix_passes(wbits, wbits)  # one width: as before


def test_cycles_follow_both_operands_and_weight_memory_the_weights(graph: Graph) -> None:
    convs = [g.name for g in graph.ops if g.kind in ("conv2d", "dense")]
    wide = compile_graph(graph, fmt=W12, name="wide")
    narrow = compile_graph(graph, fmt=M16, name="narrow")
    w12a8 = compile_graph(graph, fmt=W12, name="w12a8", layer_formats=dict.fromkeys(convs, W12A8))
    w8a12 = compile_graph(
        graph, fmt=W12, name="w8a12", layer_formats=dict.fromkeys(convs, Precision(M16, W12))
    )

    tiny = DEVICE_MODELS["pbs-tiny"]  # one matrix unit: no rounding over units, passes show exactly

    def cycles(program: Any) -> dict[str, int]:
        steps = lower_program(program, kernels=kernels_numpy)
        return {
            op.name: s.cycles(1, tiny) - tiny.op_overhead_cycles
            for op, s in zip(program.ops, steps, strict=True)
        }

    c_wide, c_narrow, c_w12a8, c_w8a12 = cycles(wide), cycles(narrow), cycles(w12a8), cycles(w8a12)
    for name in convs:
        one = c_narrow[name]  # one pass of 8-bit elements
        assert (c_wide[name], c_w12a8[name], c_w8a12[name]) == (4 * one, 2 * one, 2 * one)
        assert c_w12a8[name] + tiny.op_overhead_cycles == tiny.matrix_cycles(
            **_gemm(wide, name), element_bits=12, activation_bits=8
        )
        # Weight memory follows the weight format alone.
        assert w12a8.op_weight_bytes(name) == wide.op_weight_bytes(name)
        assert w8a12.op_weight_bytes(name) == narrow.op_weight_bytes(name)
    others = [op.name for op in wide.ops if op.name not in convs]
    assert [c_w12a8[n] for n in others] == [c_wide[n] for n in others]  # vector units: any format


def _gemm(program: Any, name: str) -> dict[str, int]:
    op, shape = program.op(name), program.weight_shapes[name]
    if op.kind == "dense":
        return {"rows": 1, "reduction": shape[0], "outputs": shape[1]}
    ho, wo = op.attrs["out_shape"][:2]
    return {"rows": ho * wo, "reduction": shape[0] * shape[1] * shape[2], "outputs": shape[3]}


def test_a_paired_program_round_trips_as_version_3_and_others_keep_their_versions(
    graph: Graph, tmp_path: Path
) -> None:
    first = matrix_ops(graph)[0]
    paired = compile_graph(graph, fmt=W12, name="p", layer_formats=paired_formats(graph))
    mixed = compile_graph(graph, fmt=W12, name="m", layer_formats={first: M16})
    # Only the activations apart: no "format", an "activationFormat".
    acts_only = compile_graph(graph, fmt=W12, name="a", layer_formats={first: W12A8})
    assert "format" not in acts_only.op(first).attrs and "activationFormat" in acts_only.op(first).attrs
    for program, version in (
        (paired, ACTIVATION_FORMAT_VERSION),
        (mixed, MIXED_FORMAT_VERSION),
        (acts_only, 3),
    ):
        save_program(program, tmp_path / f"{program.name}.fpga")
        loaded = load_program(tmp_path / f"{program.name}.fpga")
        assert loaded.version == program.file_version == version and loaded.is_mixed
        assert loaded.layer_formats() == program.layer_formats()
        x = calibration(2)
        np.testing.assert_array_equal(run(loaded, x), run(program, x))
    assert paired.layer_formats()[first] == "int12-bfp/msfp16" and acts_only.has_activation_formats
    assert not mixed.has_activation_formats
    assert paired.summary()["formatCounts"]["int12-bfp/msfp16"] >= 1


def test_a_reader_refuses_what_it_cannot_run(graph: Graph, tmp_path: Path) -> None:
    """A version-3 file claimed as version 4 is refused by version; a bad activation format by name."""
    paired = compile_graph(graph, fmt=W12, name="p", layer_formats=paired_formats(graph))
    save_program(paired, tmp_path / "p.fpga")
    with zipfile.ZipFile(tmp_path / "p.fpga") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(members["program.json"])
    for version, edit, message in (
        (4, None, r"version 4 is not supported.*versions 1, 2, 3"),
        (3, "bad", r"invalid activationFormat"),
    ):
        h = json.loads(json.dumps(header))
        h["version"] = version
        if edit:
            next(o for o in h["ops"] if "activationFormat" in o["attrs"])["attrs"]["activationFormat"][
                "mantissa_bits"
            ] = 99
        with zipfile.ZipFile(tmp_path / "e.fpga", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, json.dumps(h) if name == "program.json" else data)
        with pytest.raises(ProgramFormatError, match=message):
            load_program(tmp_path / "e.fpga")
    with pytest.raises(ProgramFormatError, match="vector units: no activationFormat"):
        Op("add", "a", ("x", "y"), "z", {"activationFormat": asdict(M16)})


def test_candidate_lists_read_pairs_and_refuse_bad_input() -> None:
    assert get_precision("int12-bfp/MSFP16") == W12A8 and get_precision("msfp16") == Precision.of(M16)
    assert W12A8.name == "int12-bfp/msfp16" and Precision.of(M16).name == "msfp16"
    assert parse_candidates("msfp16, int12-bfp/msfp16 ,int12-bfp") == (
        Precision.of(M16),
        W12A8,
        Precision.of(W12),
    )
    assert parse_candidates([M16, W12A8, "int12-bfp"])[1] == W12A8
    for text, message in (
        ("msfp16,int12-bfp/bogus", r"in 'int12-bfp/bogus': unknown BFP format 'bogus'"),
        ("a/b/c", r"WEIGHTS/ACTIVATIONS"),
        ("int12-bfp/", r"WEIGHTS/ACTIVATIONS"),
        (" , ", r"empty"),
        ("msfp16,int12-bfp/msfp16,int12-bfp/MSFP16", r"int12-bfp/msfp16 more than once"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_candidates(text)
    names = [c.name for c in DEFAULT_CANDIDATES]
    assert names[-3:] == ["msfp16/int12-bfp", "int12-bfp/msfp16", "int12-bfp"]


def test_the_search_uses_pairs_to_save_device_time_deterministically(graph: Graph, model: Any) -> None:
    """With only int12-bfp and the 12x8 pair to choose from, a loose budget moves the matrix ops to the
    pair (half the passes); the result repeats exactly."""
    budget = AccuracyBudget.parse("cosine>=0.99")
    cands: tuple[BfpFormat | Precision, ...] = (W12A8, W12)
    calib = calibration()
    results = [
        search_formats(graph, model=model, budget=budget, calibration=calib, name="m", candidates=cands)
        for _ in range(2)
    ]
    a, b = results
    assert a.layer_formats == b.layer_formats and a.metrics == b.metrics
    gemms = [g.name for g in graph.ops if g.kind in ("conv2d", "dense")]
    assert any(a.layer_formats[n] == "int12-bfp/msfp16" for n in gemms)
    assert a.program.has_activation_formats and a.program.file_version == ACTIVATION_FORMAT_VERSION
    assert a.program.metadata["precision"]["candidates"] == ["int12-bfp/msfp16", "int12-bfp"]
    wide = compile_graph(graph, fmt=W12, name="wide")

    def device_cycles(program: Any) -> int:
        return sum(s.cycles(1, DEFAULT_DEVICE_MODEL) for s in lower_program(program, kernels=kernels_numpy))

    assert device_cycles(a.program) < device_cycles(wide)
    assert a.score >= budget.threshold
