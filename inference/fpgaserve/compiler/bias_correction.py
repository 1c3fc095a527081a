"""Empirical bias correction: remove the per-channel mean shift that quantization adds to each matrix op.

Role: a compile step, called by ``compile_keras(..., bias_correction=True)`` (uniform programs) and by
the precision search (``fpgaserve.compiler.precision``: every variant it scores is corrected). Nagel et
al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (ICCV 2019), empirical
variant: for each matrix op in program order, with every earlier op already quantized and corrected,
the mean per output channel over the calibration set of (quantized pre-activation - float
pre-activation) is subtracted from the op's bias (batch norm is already folded into it). It changes
no format, costs no device time, and the bias stays float32 on the vector units, so the program runs
exactly as before with other bias values.

- **Pre-activation.** The ops fuse bias and activation (and a depthwise conv quantizes its output for
  a pointwise consumer), so the mean is taken on the op run once more with its activation deferred:
  the same op, lowered by the executor's own code (``lower_op``) from a copy of the program in which
  it is linear and its output is the program's output (nothing quantizes it). Post-activation means
  would not do: ReLU6 clips, so the mean of a clipped value moves differently from the bias.
- **Float reference.** The same graph compiled with one exponent per value and 15-bit mantissas (the
  widest the device format allows; relative error below 2**-15, far below the shifts corrected) and
  run on the same kernels: the float model's pre-activations, op for op, without mapping the ops back
  to Keras layers (batch norm is folded, pads are merged). Its means are taken on the float
  network's own activations, so the correction also removes the drift that earlier layers pass on.
- An op without a bias gets one (the drift does not care whether the layer had a bias; a float32
  vector per op costs ``4 * channels`` bytes and no device time).

Deterministic for a given calibration batch: chunks are summed in a fixed order in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.keras_import import Graph
from fpgaserve.npu.formats import BfpFormat, Precision
from fpgaserve.npu.kernels import Kernels, load_kernels
from fpgaserve.npu.lowering import Env, Step, lower_op, lower_program
from fpgaserve.npu.program import MATRIX_OPS, Op, Program
from fpgaserve.npu.threads import available_cores, blas_single_threaded

__all__ = [
    "CHUNK",
    "NEAR_FLOAT",
    "Biases",
    "FloatMeans",
    "correct_biases",
    "corrected_run",
    "dead_tensors",
    "float_means",
    "map_chunks",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Biases = dict[str, F32]
# The float reference's format: one exponent per value, 15-bit mantissas (the widest allowed).
NEAR_FLOAT = Precision.of(BfpFormat("near-float", block_size=1, exponent_bits=8, mantissa_bits=15))
T = TypeVar("T")
CHUNK = 8  # examples per chunk (chunks run side by side, one per core)


@dataclass(frozen=True)
class FloatMeans:
    """Per matrix op, the float pre-activation summed per output channel, one row per calibration
    example (shape ``(N, channels)``, float64): means over any prefix of the batch come from it."""

    sums: dict[str, F64]
    counts: dict[str, int]  # values per channel and example (output height x width, or 1)

    def mean(self, name: str, n: int) -> F64:
        total: F64 = self.sums[name][:n].sum(axis=0)
        return total / (n * self.counts[name])


def _linear_step(program: Program, op: Op, kernels: Kernels) -> Step:
    """``op`` with its activation deferred and its output unquantized: its pre-activation."""
    linear = Op(op.kind, op.name, op.inputs, op.output, {**op.attrs, "activation": "linear"})
    variant = replace(
        program, ops=[linear if o.name == op.name else o for o in program.ops], output_name=op.output
    )
    return lower_op(variant, op.name, kernels=kernels)


def _channel_sums(step: Step, op: Op, env: Env) -> tuple[F64, int]:
    """Per example, the op's output summed per channel (float64), and the values per channel."""
    scratch = {t: env[t] for t in op.inputs}
    step.run(scratch)
    y = scratch[op.output]
    flat = y.reshape(y.shape[0], -1, y.shape[-1])
    return flat.sum(axis=1, dtype=np.float64), flat.shape[1]


def _sums(pool: ThreadPoolExecutor, step: Step, op: Op, envs: Sequence[Env]) -> tuple[F64, int]:
    """Per example (rows), ``step``'s output summed per channel over every chunk; values per channel."""
    parts = map_chunks(pool, partial(_channel_sums, step, op), envs)
    return np.concatenate([p[0] for p in parts]), int(parts[0][1])


def map_chunks(pool: ThreadPoolExecutor, fn: Callable[[T], Any], chunks: Sequence[T]) -> list[Any]:
    """``fn`` of every chunk, the chunks side by side on ``pool``, each on one core (the numba
    kernels are single-threaded; OpenBLAS is held to one thread), so that a chunk's result does not depend on how many run at once."""

    with blas_single_threaded():
        return list(pool.map(fn, chunks))


class _Reader(Protocol):
    @property
    def inputs(self) -> Sequence[str]: ...


def dead_tensors(ops: Sequence[_Reader], *, output_name: str) -> list[tuple[str, ...]]:
    """Per op, the tensors a run may drop once it has run (it was their last reader)."""
    reader = {t: i for i, op in enumerate(ops) for t in op.inputs}
    return [tuple(t for t, j in reader.items() if j == i and t != output_name) for i in range(len(ops))]


def float_means(
    float_program: Program, *, calibration: F32, pool: ThreadPoolExecutor, kernels: Kernels
) -> FloatMeans:
    """Run the near-float program on the batch and sum every matrix op's pre-activation per channel."""
    steps = lower_program(float_program, kernels=kernels)
    dead = dead_tensors(float_program.ops, output_name=float_program.output_name)
    envs: list[Env] = [
        {float_program.input_name: calibration[c : c + CHUNK]} for c in range(0, len(calibration), CHUNK)
    ]
    sums: dict[str, F64] = {}
    counts: dict[str, int] = {}
    for i, (op, step) in enumerate(zip(float_program.ops, steps, strict=True)):
        if op.kind in MATRIX_OPS:
            pre = _linear_step(float_program, op, kernels)
            sums[op.name], counts[op.name] = _sums(pool, pre, op, envs)
        map_chunks(pool, step.run, envs)
        for env in envs:
            for t in dead[i]:
                env.pop(t, None)
    return FloatMeans(sums, counts)


def corrected_run(
    program: Program,
    *,
    envs: list[Env],
    start: int,
    reference: FloatMeans | Program,
    kernels: Kernels,
    pool: ThreadPoolExecutor,
    keep: bool,
) -> Biases:
    """Run ``program`` from op ``start`` on ``envs`` (chunks of examples holding every tensor the ops
    from ``start`` read), correcting the bias of each matrix op from there on before running it;
    returns the program's biases, corrected from ``start`` on (those before are the program's). The
    envs end up with the corrected program's activations (``keep``: all of them, else only the
    output and what is still to be read)."""
    n = sum(int(next(v for v in env.values()).shape[0]) for env in envs)
    biases: Biases = dict(program.biases)
    dead = dead_tensors(program.ops, output_name=program.output_name)
    for i in range(start, len(program.ops)):
        op = program.ops[i]
        if op.kind in MATRIX_OPS:
            pre = _linear_step(replace(program, biases=biases), op, kernels)
            per_example, count = _sums(pool, pre, op, envs)
            quantized = per_example.sum(axis=0) / (n * count)
            if isinstance(reference, FloatMeans):
                target = reference.mean(op.name, n)
            else:  # the float op on the same (quantized network's) input: this op's own error only
                fpre = _linear_step(reference, reference.op(op.name), kernels)
                per_example, count = _sums(pool, fpre, op, envs)
                target = per_example.sum(axis=0) / (n * count)
            shift = quantized - target
            old = biases.get(op.name)
            base = old.astype(np.float64) if old is not None else np.zeros_like(shift)
            biases[op.name] = (base - shift).astype(np.float32)
            step = lower_op(replace(program, biases=biases), op.name, kernels=kernels)
        else:
            step = lower_op(program, op.name, kernels=kernels)
        map_chunks(pool, step.run, envs)
        if not keep:
            for env in envs:
                for t in dead[i]:
                    env.pop(t, None)
    return biases


def correct_biases(
    graph: Graph,
    *,
    formats: Mapping[str, BfpFormat | Precision],
    base: BfpFormat,
    calibration: npt.NDArray[Any],
    per_layer: bool = False,
) -> Biases:
    """The corrected bias of every matrix op of ``graph`` compiled with ``formats`` per op (others in
    ``base``), measured on ``calibration`` (a preprocessed batch): pass it to ``compile_graph(...,
    biases=...)``."""
    from fpgaserve.compiler.compile import compile_graph

    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    if len(calib) == 0:
        raise ValueError("the calibration set is empty")
    kernels = load_kernels()
    layers = [g.name for g in graph.ops if g.kind in MATRIX_OPS]
    with ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="bias-correction") as pool:
        float_program = compile_graph(
            graph, fmt=base, name="float", layer_formats=dict.fromkeys(layers, NEAR_FLOAT)
        )
        reference: FloatMeans | Program = (
            float_program
            if per_layer
            else float_means(float_program, calibration=calib, pool=pool, kernels=kernels)
        )
        program = compile_graph(graph, fmt=base, name="quantized", layer_formats=dict(formats))
        envs: list[Env] = [{program.input_name: calib[c : c + CHUNK]} for c in range(0, len(calib), CHUNK)]
        return corrected_run(
            program, envs=envs, start=0, reference=reference, kernels=kernels, pool=pool, keep=False
        )
