"""Compile a Keras featurizer into a device program.

Role: the compiler's entry point. Imports the Keras model (``keras_import``), fuses it for the
device (``fuse``), quantizes every matrix-unit weight once into the chosen BFP format (one for the
whole program, or per layer: given, or chosen against an accuracy budget by ``precision``), records
per-op shapes for the executor's buffers and cycle model, and returns a ``Program``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from fpgaserve.compiler.fuse import optimize
from fpgaserve.compiler.keras_import import Graph, import_keras
from fpgaserve.npu.bfp import DEFAULT_FORMAT, BfpFormat, BfpTensor, encode
from fpgaserve.npu.formats import Precision
from fpgaserve.npu.program import (
    ACTIVATION_FORMAT_VERSION,
    MATRIX_OPS,
    MIXED_FORMAT_VERSION,
    PROGRAM_FORMAT_VERSION,
    Op,
    Program,
    reduction_axis,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from fpgaserve.compiler.precision import AccuracyBudget

__all__ = ["compile_graph", "compile_keras"]

logger = logging.getLogger(__name__)


WeightCache = dict[tuple[str, BfpFormat], BfpTensor]


def compile_graph(
    graph: Graph,
    *,
    fmt: BfpFormat,
    name: str,
    metadata: dict[str, Any] | None = None,
    layer_formats: Mapping[str, BfpFormat | Precision] | None = None,
    cache: WeightCache | None = None,
    biases: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> Program:
    """Quantize an optimized float graph into a program.

    ``layer_formats`` maps matrix ops to their own formats (others use ``fmt``): one ``BfpFormat`` for
    weights and activations, or a ``Precision`` pair (weights packed in one, input activations quantized
    in the other); ``cache`` keeps packed weights per (op, format) across calls (the precision search
    compiles many variants); ``biases`` replaces the graph's bias of the ops it names (the corrected
    biases of ``fpgaserve.compiler.bias_correction``; an op without one in the graph gets it).
    """
    layer_formats = layer_formats or {}
    unknown = set(layer_formats) - {g.name for g in graph.ops if g.kind in MATRIX_OPS}
    if unknown:
        raise ValueError(f"layer_formats names ops that are not matrix ops: {', '.join(sorted(unknown))}")
    ops: list[Op] = []
    weights, weight_shapes, bias_out, constants = {}, {}, {}, {}
    for g in graph.ops:
        attrs = dict(g.attrs)
        attrs["out_shape"] = list(graph.shapes.get(g.output) or graph.shapes[g.name])
        attrs["in_shape"] = list(graph.shapes[g.inputs[0]])
        if g.kind in MATRIX_OPS:
            assert g.weight is not None
            weight = g.weight
            if g.kind == "depthwise_conv2d":  # stored as (taps, channels): blocks run over the taps
                attrs["kernel"] = [int(weight.shape[0]), int(weight.shape[1])]
                weight = weight.reshape(-1, weight.shape[2])
            precision = Precision.of(layer_formats.get(g.name, fmt))
            op_fmt = precision.weights
            if op_fmt != fmt:
                attrs["format"] = asdict(op_fmt)
            if not precision.uniform:  # absent: activations in the weight format, as before
                attrs["activationFormat"] = asdict(precision.activations)
            key = (g.name, op_fmt)
            packed = cache.get(key) if cache is not None else None
            if packed is None:
                packed = encode(weight, op_fmt, axis=reduction_axis(g.kind))
                if cache is not None:
                    cache[key] = packed
            weights[g.name] = packed
            weight_shapes[g.name] = tuple(int(d) for d in weight.shape)
            bias = (biases or {}).get(g.name, g.bias)
            if bias is not None:
                bias_out[g.name] = np.asarray(bias, np.float32)
        elif g.kind == "scale_shift":
            assert g.scale is not None and g.shift is not None
            constants[f"{g.name}.scale"] = g.scale
            constants[f"{g.name}.shift"] = g.shift
        ops.append(Op(kind=g.kind, name=g.name, inputs=tuple(g.inputs), output=g.output, attrs=attrs))
    return Program(
        name=name,
        fmt=fmt,
        input_name=graph.input_name,
        input_shape=graph.input_shape,
        output_name=graph.output_name,
        output_shape=graph.shapes[graph.output_name],
        ops=ops,
        weights=weights,
        weight_shapes=weight_shapes,
        biases=bias_out,
        constants=constants,
        metadata=dict(metadata or {}),
        version=ACTIVATION_FORMAT_VERSION
        if any("activationFormat" in op.attrs for op in ops)
        else MIXED_FORMAT_VERSION
        if any("format" in op.attrs for op in ops)
        else PROGRAM_FORMAT_VERSION,
    )


def compile_keras(
    model: Any,
    *,
    fmt: BfpFormat = DEFAULT_FORMAT,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    budget: AccuracyBudget | None = None,
    calibration: npt.NDArray[Any] | None = None,
    candidates: tuple[BfpFormat | Precision, ...] | None = None,
    head: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None = None,
    bias_correction: bool = False,
    adapt: str | None = None,
) -> Program:
    """Compile a Keras featurizer (functional or Sequential) for the emulated FPGA.

    With a ``budget`` (and a preprocessed ``calibration`` batch), each matrix op gets the narrowest
    format of ``candidates`` (formats or weight/activation ``Precision`` pairs; default
    ``precision.DEFAULT_CANDIDATES``, narrowest to INT12-BFP) that keeps the whole
    program within the budget against the float model; ``head`` maps outputs to class scores for a
    top-1 budget (default: the outputs themselves). ``fmt`` is then the program's base format. See
    ``fpgaserve.compiler.precision`` and docs/numerics.md. Raises ``UnsupportedLayerError`` naming the
    first layer the device cannot run, and ``BudgetError`` when no choice meets the budget.

    ``bias_correction`` (needs ``calibration``): each matrix op's bias is corrected for the mean
    shift quantization adds to its channels on the calibration batch
    (``fpgaserve.compiler.bias_correction``); with a budget, every variant the search scores is.
    The program's metadata records it (``biasCorrection``).

    ``adapt`` (needs ``calibration``; not with ``bias_correction``): ``"permute"`` sorts the channels
    inside each inverted-residual block and residual stream by magnitude before anything else (the
    same function exactly; ``fpgaserve.compiler.permute``), ``"refit"`` refits each conv2d / dense
    op's weights and bias to its quantized inputs once the formats are fixed (``fmt``, or the
    search's choice; ``fpgaserve.compiler.adapt``), ``"permute+refit"`` both. The metadata records
    it (``weightAdaptation``). Off by default: docs/numerics.md, "Weight adaptation".
    """
    start = time.perf_counter()
    graph = optimize(import_keras(model, input_shape=input_shape))
    meta = dict(metadata or {})
    if bias_correction and calibration is None:
        raise ValueError("bias correction needs a calibration batch")
    if adapt is not None:
        from fpgaserve.compiler.adapt import check_adaptation

        check_adaptation(adapt)
        if calibration is None:
            raise ValueError("weight adaptation needs a calibration batch")
        if bias_correction:
            raise ValueError(
                "weight adaptation changes the weights bias correction is measured on: choose one"
            )
        adapt_start = time.perf_counter()
        if "permute" in adapt:
            from fpgaserve.compiler.permute import permute

            graph = permute(graph, base=fmt, calibration=calibration)
        meta["weightAdaptation"] = {"method": adapt, "calibrationExamples": len(calibration)}
    if budget is None and bias_correction:
        from fpgaserve.compiler.bias_correction import correct_biases

        assert calibration is not None
        biases = correct_biases(graph, formats={}, base=fmt, calibration=calibration)
        meta["biasCorrection"] = {"calibrationExamples": len(calibration)}
        program = compile_graph(graph, fmt=fmt, name=name or model.name, metadata=meta, biases=biases)
    elif budget is None:
        program = compile_graph(graph, fmt=fmt, name=name or model.name, metadata=meta)
    else:
        from fpgaserve.compiler.precision import search_formats

        if calibration is None:
            raise ValueError("an accuracy budget needs a calibration batch")
        result = search_formats(
            graph, model=model, budget=budget, calibration=calibration, candidates=candidates,
            head=head, name=name or model.name, metadata=meta, bias_correction=bias_correction,
        )  # fmt: skip
        program = result.program
    if adapt is not None and "refit" in adapt:
        assert calibration is not None
        program = _refitted(graph, program, calibration=calibration)
    if adapt is not None:  # the search's time is its own (metadata "precision")
        program.metadata["weightAdaptation"]["seconds"] = round(
            time.perf_counter() - adapt_start - program.metadata.get("precision", {}).get("searchSeconds", 0),
            1,
        )
    logger.info(
        "compiled %s: %d ops, %.1f MiB of %s weights in %.1f s",
        program.name, len(program.ops), program.weight_bytes / 2**20,
        "mixed" if program.is_mixed else program.fmt.name, time.perf_counter() - start,
    )  # fmt: skip
    return program


def _refitted(graph: Graph, program: Program, *, calibration: npt.NDArray[Any]) -> Program:
    """``program`` recompiled, in its own formats, from ``graph`` with adapted weights."""
    from fpgaserve.compiler.adapt import DEFAULT_REFERENCE, DEFAULT_RIDGE, adapt_weights

    formats: dict[str, BfpFormat | Precision] = {
        op.name: program.precision_of(op.name) for op in program.ops if op.kind in MATRIX_OPS
    }
    formats = {k: f for k, f in formats.items() if f != Precision.of(program.fmt)}
    adapted = adapt_weights(graph, formats=formats, base=program.fmt, calibration=calibration)
    meta = dict(program.metadata)
    meta["weightAdaptation"] = {
        **meta["weightAdaptation"],
        "ridge": DEFAULT_RIDGE,
        "reference": DEFAULT_REFERENCE,
    }
    return compile_graph(adapted, fmt=program.fmt, name=program.name, metadata=meta, layer_formats=formats)
