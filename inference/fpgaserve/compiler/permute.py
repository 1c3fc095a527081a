"""Channel permutation: group channels of like magnitude into the same BFP blocks, exactly.

Role: a compile step, called by ``compile_keras(..., adapt="permute"|"permute+refit")`` before the refit
(``fpgaserve.compiler.adapt``). A block of 16 activations shares one exponent, so a channel that is
usually small but sits in a block beside a large one is quantized with the large one's step: its
relative error is as large as the ratio of the two. Inside an inverted-residual block (conv ->
depthwise conv -> pointwise conv, each tensor read only by the next op) the channel order of the two
middle tensors is free: permuting the first conv's output channels (weight columns and bias), the
depthwise filters and biases, and the pointwise conv's input rows computes the same function in exact
arithmetic. The order chosen sorts the channels by their root mean square at the pointwise conv's input
on the calibration batch (the tensor quantized in the pointwise conv's activation format), so that
each block holds channels of like scale. Residual streams (tensors joined by linear adds, written by
linear convs, read by convs) are permuted the same way (``permute_streams``). No device time, no
weight memory, no format changes; called before the precision search, which then measures the
permuted network.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.bias_correction import CHUNK
from fpgaserve.compiler.keras_import import Graph, GraphOp
from fpgaserve.npu.formats import BfpFormat, Precision
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.lowering import Env, lower_program
from fpgaserve.npu.threads import blas_single_threaded

__all__ = ["Chain", "chains", "permute", "permute_channels", "permute_streams", "streams"]

F32 = npt.NDArray[np.float32]
Chain = tuple[GraphOp, GraphOp, GraphOp]  # conv, depthwise conv, pointwise conv


def chains(graph: Graph) -> list[Chain]:
    """The conv -> depthwise -> 1x1 conv runs whose middle tensors have one reader each."""
    found: list[Chain] = []
    for d in graph.ops:
        if d.kind != "depthwise_conv2d":
            continue
        producers = [g for g in graph.ops if g.output == d.inputs[0]]
        readers_in, readers_out = graph.consumers(d.inputs[0]), graph.consumers(d.output)
        if len(producers) != 1 or len(readers_in) != 1 or len(readers_out) != 1:
            continue
        p, c = producers[0], readers_out[0]
        pointwise = c.kind == "conv2d" and c.weight is not None and c.weight.shape[:2] == (1, 1)
        if p.kind == "conv2d" and pointwise and graph.output_name not in (p.output, d.output):
            found.append((p, d, c))
    return found


def _statistic(y: F32) -> F32:
    """What is summed per channel to rank the channels: the square (root mean square ranking; it
    measured better than the mean magnitude or the fourth power on EfficientNet-Lite0)."""
    return y * y


def _magnitudes(
    graph: Graph,
    *,
    formats: dict[str, BfpFormat | Precision],
    base: BfpFormat,
    calibration: F32,
    wanted: set[str],
) -> dict[str, npt.NDArray[np.float64]]:
    """``_statistic`` summed per channel of the ``wanted`` tensors, on the quantized program."""
    from fpgaserve.compiler.compile import compile_graph

    program = compile_graph(graph, fmt=base, name="permute", layer_formats=formats)
    steps = lower_program(program, kernels=load_kernels())
    sums: dict[str, npt.NDArray[np.float64]] = {}
    with blas_single_threaded():
        for c in range(0, len(calibration), CHUNK):
            env: Env = {program.input_name: calibration[c : c + CHUNK]}
            for op, step in zip(program.ops, steps, strict=True):
                step.run(env)
                if op.output in wanted:
                    y = env[op.output]
                    part = _statistic(y).reshape(-1, y.shape[-1]).sum(axis=0, dtype=np.float64)
                    sums[op.output] = sums.get(op.output, 0) + part
    return sums


def _reorder_outputs(g: GraphOp, order: npt.NDArray[np.intp]) -> GraphOp:
    """``g`` writing its output channels in ``order``: its weight's last axis and its bias."""
    assert g.weight is not None
    bias = None if g.bias is None else np.ascontiguousarray(g.bias[order])
    return replace(g, weight=np.ascontiguousarray(g.weight[..., order]), bias=bias)


def _reorder_inputs(g: GraphOp, order: npt.NDArray[np.intp]) -> GraphOp:
    """``g`` (a conv, HWIO weights) reading its input channels in ``order``."""
    assert g.weight is not None
    return replace(g, weight=np.ascontiguousarray(g.weight[:, :, order, :]))


def permute_channels(
    graph: Graph, *, formats: dict[str, BfpFormat | Precision], base: BfpFormat, calibration: F32
) -> Graph:
    """``graph`` with the channels inside every chain sorted by magnitude (same function in exact
    arithmetic). Deterministic for a given calibration batch (a stable sort)."""
    sums = _magnitudes(
        graph,
        formats=formats,
        base=base,
        calibration=calibration,
        wanted={d.output for _, d, _ in chains(graph)},
    )
    new: dict[str, GraphOp] = {}
    for p, d, c in chains(graph):
        order = np.argsort(-sums[d.output], kind="stable")
        new[p.name] = _reorder_outputs(p, order)
        new[d.name] = _reorder_outputs(d, order)  # a depthwise filter's channel is its output's
        new[c.name] = _reorder_inputs(c, order)
    return replace(graph, ops=[new.get(g.name, g) for g in graph.ops])


def streams(graph: Graph) -> list[tuple[set[str], list[GraphOp], list[GraphOp]]]:
    """The residual streams whose channels may be rescaled exactly: each a set of tensors joined by
    ``add`` ops, written only by linear convs and read only by convs (and those adds)."""
    adds = [g for g in graph.ops if g.kind == "add" and g.attrs.get("activation", "linear") == "linear"]
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for a in adds:
        for t in [*a.inputs, a.output]:
            parent.setdefault(t, t)
            parent[root(t)] = root(a.output)
    linear_out = {g.output for g in graph.ops if g.kind == "conv2d" and g.attrs.get("activation") == "linear"}
    groups: dict[str, set[str]] = {}
    for t in linear_out | set(parent):
        groups.setdefault(root(t), set()).add(t)
    found = []
    for tensors in groups.values():
        writers = [g for g in graph.ops if g.output in tensors and g not in adds]
        readers = [g for g in graph.ops if set(g.inputs) & tensors and g not in adds]
        if (
            graph.output_name in tensors
            or graph.input_name in tensors
            or not readers
            or any(w.output not in linear_out for w in writers)
            or any(r.kind != "conv2d" for r in readers)
        ):
            continue
        found.append((tensors, writers, readers))
    return found


def permute_streams(
    graph: Graph, *, formats: dict[str, BfpFormat | Precision], base: BfpFormat, calibration: F32
) -> Graph:
    """``graph`` with every residual stream's channels sorted by magnitude: the writers' output
    channels (weight columns, bias) and the readers' input rows in one new order (exact)."""
    found = streams(graph)
    sums = _magnitudes(
        graph, formats=formats, base=base, calibration=calibration,
        wanted={t for tensors, _, _ in found for t in tensors},
    )  # fmt: skip
    new: dict[str, GraphOp] = {g.name: g for g in graph.ops}
    for tensors, writers, readers in found:
        order = np.argsort(-np.sum([sums[t] for t in sorted(tensors)], axis=0), kind="stable")
        for w in writers:
            new[w.name] = _reorder_outputs(new[w.name], order)
        for r in readers:
            new[r.name] = _reorder_inputs(new[r.name], order)
    return replace(graph, ops=[new[g.name] for g in graph.ops])


def permute(graph: Graph, *, base: BfpFormat, calibration: F32) -> Graph:
    """Both permutations (residual streams, then inverted-residual blocks), measured in ``base``."""
    graph = permute_streams(graph, formats={}, base=base, calibration=calibration)
    return permute_channels(graph, formats={}, base=base, calibration=calibration)
