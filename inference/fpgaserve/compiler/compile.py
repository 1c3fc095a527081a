"""Compile a Keras featurizer into a device program.

Role: the compiler's entry point. Imports the Keras model (``keras_import``), fuses it for the
device (``fuse``), quantizes every matrix-unit weight once into the chosen BFP format, records
per-op shapes for the executor's buffers and cycle model, and returns a ``Program``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from fpgaserve.compiler.fuse import optimize
from fpgaserve.compiler.keras_import import Graph, import_keras
from fpgaserve.npu.bfp import DEFAULT_FORMAT, BfpFormat, encode
from fpgaserve.npu.program import MATRIX_OPS, Op, Program, reduction_axis

__all__ = ["compile_graph", "compile_keras"]

logger = logging.getLogger(__name__)


def compile_graph(
    graph: Graph, *, fmt: BfpFormat, name: str, metadata: dict[str, Any] | None = None
) -> Program:
    """Quantize an optimized float graph into a program."""
    ops: list[Op] = []
    weights, weight_shapes, biases, constants = {}, {}, {}, {}
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
            weights[g.name] = encode(weight, fmt, axis=reduction_axis(g.kind))
            weight_shapes[g.name] = tuple(int(d) for d in weight.shape)
            if g.bias is not None:
                biases[g.name] = np.asarray(g.bias, np.float32)
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
        biases=biases,
        constants=constants,
        metadata=dict(metadata or {}),
    )


def compile_keras(
    model: Any,
    *,
    fmt: BfpFormat = DEFAULT_FORMAT,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Program:
    """Compile a Keras featurizer (functional or Sequential) for the emulated FPGA.

    Raises ``UnsupportedLayerError`` naming the first layer the device cannot run.
    """
    start = time.perf_counter()
    graph = optimize(import_keras(model, input_shape=input_shape))
    program = compile_graph(graph, fmt=fmt, name=name or model.name, metadata=metadata)
    logger.info(
        "compiled %s: %d ops, %.1f MiB of %s weights in %.1f s",
        program.name, len(program.ops), program.weight_bytes / 2**20, fmt.name, time.perf_counter() - start,
    )  # fmt: skip
    return program
