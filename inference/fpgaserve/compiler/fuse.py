"""Graph rewrites that map a float op graph onto the device's fused ops.

Role: pure functions over ``Graph`` (no TensorFlow, no quantization). Each pass merges an op into
its single producer when the device can do both in one op:

* ``fold_padding``: ZeroPadding2D into the following conv / pooling window;
* ``fold_batchnorm``: BatchNormalization into the preceding conv, depthwise conv or dense, in float
  before weights are quantized (so the folded weights are what gets quantized);
* ``fuse_activations``: ReLU/ReLU6 into the preceding matrix op, add or scale_shift.

A merged op takes over the output name of the op it absorbs, so the graph's output name survives.
"""

from __future__ import annotations

import numpy as np

from fpgaserve.compiler.keras_import import Graph, GraphOp

__all__ = ["fold_batchnorm", "fold_padding", "fuse_activations", "optimize"]

WINDOW_OPS = ("conv2d", "depthwise_conv2d", "max_pool", "avg_pool")
MATRIX_OPS = ("conv2d", "depthwise_conv2d", "dense")


def _producer(graph: Graph, tensor: str) -> GraphOp | None:
    for op in graph.ops:
        if op.output == tensor:
            return op
    return None


def _sole_consumer(graph: Graph, op: GraphOp) -> GraphOp | None:
    if op.output == graph.output_name:
        return None
    users = graph.consumers(op.output)
    return users[0] if len(users) == 1 else None


def _absorb(graph: Graph, keep: GraphOp, gone: GraphOp) -> None:
    """Remove ``gone`` (the sole consumer of ``keep``); ``keep`` now produces ``gone``'s output."""
    keep.output = gone.output
    graph.ops.remove(gone)


def fold_padding(graph: Graph) -> None:
    for pad in [op for op in graph.ops if op.kind == "pad"]:
        user = _sole_consumer(graph, pad)
        if user is None or user.kind not in WINDOW_OPS:
            continue
        if user.kind in ("max_pool", "avg_pool") and any(user.attrs.get("pads", [0, 0, 0, 0])):
            continue  # mixing zero pads with the pool's own -inf pads has no single pad value
        user.attrs["pads"] = [
            a + b for a, b in zip(pad.attrs["pads"], user.attrs.get("pads", [0] * 4), strict=True)
        ]
        if user.kind in ("max_pool", "avg_pool"):
            user.attrs["pad_value"] = 0.0  # ZeroPadding2D pads with zeros, not -inf
        user.inputs = [pad.inputs[0]]
        graph.ops.remove(pad)


def fold_batchnorm(graph: Graph) -> None:
    for bn in [op for op in graph.ops if op.kind == "scale_shift"]:
        prod = _producer(graph, bn.inputs[0])
        if prod is None or prod.kind not in MATRIX_OPS or prod.attrs.get("activation", "linear") != "linear":
            continue
        if _sole_consumer(graph, prod) is not bn or bn.attrs.get("activation", "linear") != "linear":
            continue
        assert prod.weight is not None and bn.scale is not None and bn.shift is not None
        scale = bn.scale.astype(np.float64)
        # The output channel is the weight's last axis for every matrix op (cout, c or out).
        prod.weight = (prod.weight.astype(np.float64) * scale).astype(np.float32)
        bias = prod.bias.astype(np.float64) if prod.bias is not None else np.zeros_like(scale)
        prod.bias = (bias * scale + bn.shift).astype(np.float32)
        _absorb(graph, prod, bn)


def fuse_activations(graph: Graph) -> None:
    for act in [op for op in graph.ops if op.kind == "activation"]:
        prod = _producer(graph, act.inputs[0])
        if prod is None or prod.kind not in (*MATRIX_OPS, "add", "scale_shift"):
            continue
        if prod.attrs.get("activation", "linear") != "linear" or _sole_consumer(graph, prod) is not act:
            continue
        prod.attrs["activation"] = act.attrs["activation"]
        _absorb(graph, prod, act)


def optimize(graph: Graph) -> Graph:
    """Run all passes in the order that exposes the most fusion."""
    fold_padding(graph)
    fold_batchnorm(graph)
    fuse_activations(graph)
    return graph
