"""Weight adaptation: refit each matrix op's weights to its narrow activations, after training.

Role: a compile step, called by ``compile_keras(..., adapt=...)`` (and so the CLI's
X (given, or chosen by the
precision search). Layer-wise reconstruction in the spirit of AdaQuant (Hubara et al., "Accurate Post
Training Quantization With Small Calibration Sets", ICML 2021), solved in closed form: for each
conv2d / dense op in program order, with every earlier op already adapted and quantized, the op's
weights and bias are refitted so that the op applied to its *quantized* input (exactly as the
emulator quantizes it: the program's own kernels) reproduces the float op's output on the same
(quantized network's) input, on unlabeled calibration images. Measured on EfficientNet-Lite0 it is
about neutral (docs/numerics.md, "Weight adaptation"); the exact permutation helps more.

- **Why closed form.** The op is linear in its weights for a fixed quantized input, so the refit is a
  ridge regression, ``min ||Xq W + b - T||**2 + lambda ||W - W0||**2``, solved exactly from the Gram
  matrix ``Xq^T Xq`` (K x K, K = the op's reduction length, at most 1,152 on EfficientNet-Lite0) and
  ``Xq^T T``, summed over the calibration pixels in float64. No learning rate, no epochs, no
  TensorFlow; deterministic. It assumes the *weights'* own quantization is small next to the
  activations' (12-bit weights against 8-bit activations: the programs this is for); the refitted
  weights are then packed in the op's weight format, and the next op sees exactly what the device
  computes.
- **Target.** The float op on the quantized network's input (``reference="layer"``, the default:
  this op's own error only), or the float network's own pre-activation (``"network"``: it also
  absorbs the drift earlier layers hand on, but a regression from noisy inputs to clean outputs
  shrinks the outputs toward their mean, layer after layer, and with them the logit margins).
- **Ridge.** ``lambda = ridge * mean(diag(Xq^T Xq))``, toward the trained weights (and bias): it
  keeps a refit with few pixels per weight (the 7 x 7 layers) near the trained solution.
- Depthwise filters are left alone: they run on the vector units in their weight format, and in the
  programs this is for their inputs are 12-bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.bias_correction import CHUNK, NEAR_FLOAT, dead_tensors, map_chunks
from fpgaserve.compiler.keras_import import Graph, GraphOp
from fpgaserve.npu.bfp import encode
from fpgaserve.npu.formats import BfpFormat, Precision
from fpgaserve.npu.kernels import Kernels, load_kernels
from fpgaserve.npu.lowering import Env, Step, lower_op, lower_program, prequantized_tensors
from fpgaserve.npu.program import Op, Program, op_activation_format, reduction_axis
from fpgaserve.npu.threads import available_cores

__all__ = [
    "ADAPTATIONS",
    "ADAPTED_KINDS",
    "DEFAULT_REFERENCE",
    "DEFAULT_RIDGE",
    "Reference",
    "adapt_weights",
    "check_adaptation",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Reference = Literal["network", "layer"]
ADAPTED_KINDS = ("conv2d", "dense")
DEFAULT_RIDGE = 1.0
# What ``compile_keras(adapt=...)`` does: "permute" (``fpgaserve.compiler.permute``, before the
# precision search: exact), "refit" (this module, once the formats are fixed), or both.
ADAPTATIONS = ("permute", "refit", "permute+refit")


def check_adaptation(value: str) -> str:
    """``value`` if it names an adaptation, else a ValueError listing them."""
    if value not in ADAPTATIONS:
        raise ValueError(f"unknown weight adaptation {value!r}: choose one of {', '.join(ADAPTATIONS)}")
    return value


DEFAULT_REFERENCE: Reference = "layer"


def _cols(x: F32, op: Op, program: Program, kernels: Kernels, *, quantized: bool, pre: bool) -> F32:
    """The op's input as the rows its matrix multiplies (im2col patches), quantized exactly as the
    lowered op does (``quantized``), or as they are (``pre``: already quantized by the producer)."""
    if op.kind == "dense":
        if not quantized:
            return x.reshape(x.shape[0], -1)
        fmt = op_activation_format(op, program.fmt)
        return kernels.quantize_window(x.reshape(x.shape[0], 1, 1, -1), fmt).reshape(x.shape[0], -1)
    kh, kw, cin, _ = program.weight_shapes[op.name]
    stride = int(op.attrs.get("strides", (1, 1))[0])
    t, b, left, r = (int(p) for p in op.attrs.get("pads", (0, 0, 0, 0)))
    ho, wo = int(op.attrs["out_shape"][0]), int(op.attrs["out_shape"][1])
    fmt = op_activation_format(op, program.fmt)
    if pre:
        return x.reshape(-1, cin)
    if kh == kw == 1 and not any((t, b, left, r)):
        xs = kernels.quantize_window(x, fmt, stride=stride) if quantized else x[:, ::stride, ::stride]
        return np.ascontiguousarray(xs).reshape(-1, cin)
    if quantized:
        xp = kernels.quantize_window(x, fmt, pads=(t, b, left, r))
    else:
        xp = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    return kernels.im2col(np.ascontiguousarray(xp), kh=kh, kw=kw, stride=stride, out_h=ho, out_w=wo)


def _run(step: Step, envs: list[Env], c: int) -> None:
    step.run(envs[c])


def _solve(gram: F64, cross: F64, w0: F64, *, ridge: float) -> F64:
    """Ridge regression toward ``w0`` (rows: the K inputs and the bias) from the augmented Gram matrix."""
    lam = max(ridge * float(np.mean(np.diag(gram)[:-1])), 1e-12)  # dead inputs leave the Gram singular
    lhs = gram + lam * np.eye(len(gram))
    return np.asarray(np.linalg.solve(lhs, cross + lam * w0), dtype=np.float64)


def adapt_weights(
    graph: Graph,
    *,
    formats: Mapping[str, BfpFormat | Precision],
    base: BfpFormat,
    calibration: npt.NDArray[np.float32],
    reference: Reference = DEFAULT_REFERENCE,
    ridge: float = DEFAULT_RIDGE,
    only: Sequence[str] | None = None,
) -> Graph:
    """``graph`` with the weights and biases of its conv2d / dense ops (or of ``only``) refitted for
    ``formats`` per op (others in ``base``) on ``calibration`` (a preprocessed batch); compile the
    result with the same formats. Deterministic for a given batch."""
    from fpgaserve.compiler.compile import compile_graph

    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    if len(calib) == 0:
        raise ValueError("the calibration set is empty")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    kernels = load_kernels()
    layers = [g.name for g in graph.ops if g.kind in ("conv2d", "dense", "depthwise_conv2d")]
    chosen = set(only if only is not None else [g.name for g in graph.ops if g.kind in ADAPTED_KINDS])
    program = compile_graph(graph, fmt=base, name="adapted", layer_formats=dict(formats))
    prequantized = prequantized_tensors(program)
    float_steps: list[Step | None] = [None] * len(program.ops)
    if reference == "network":  # the float network runs beside the quantized one
        near_float = dict.fromkeys(layers, NEAR_FLOAT)
        float_program = compile_graph(graph, fmt=base, name="float", layer_formats=near_float)
        float_steps = list(lower_program(float_program, kernels=kernels))
    dead = dead_tensors(program.ops, output_name=program.output_name)
    new_ops: dict[str, GraphOp] = {}
    chunks = range(0, len(calib), CHUNK)
    qenvs: list[Env] = [{program.input_name: calib[c : c + CHUNK]} for c in chunks]
    fenvs: list[Env] = [{program.input_name: calib[c : c + CHUNK]} for c in chunks]

    def stats(op: Op, g: GraphOp, c: int) -> tuple[F64, F64]:
        x = qenvs[c][op.inputs[0]]
        xq = _cols(x, op, program, kernels, quantized=True, pre=op.inputs[0] in prequantized)
        w0 = np.asarray(g.weight, np.float32).reshape(xq.shape[1], -1)
        b0 = np.zeros(w0.shape[1], np.float32) if g.bias is None else g.bias
        src = fenvs[c][op.inputs[0]] if reference == "network" else x
        target = _cols(src, op, program, kernels, quantized=False, pre=False) @ w0 + b0
        xa = np.concatenate([xq, np.ones((len(xq), 1), np.float32)], axis=1).astype(np.float64)
        return xa.T @ xa, xa.T @ target.astype(np.float64)

    with ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="adapt") as pool:

        def each(fn: Callable[[int], Any]) -> list[Any]:
            return map_chunks(pool, fn, range(len(qenvs)))

        for i, (op, fstep) in enumerate(zip(program.ops, float_steps, strict=True)):
            g = graph.ops[i]
            if op.name in chosen and op.kind in ADAPTED_KINDS:
                assert g.weight is not None
                parts = each(partial(stats, op, g))
                gram = np.sum([p[0] for p in parts], axis=0)
                cross = np.sum([p[1] for p in parts], axis=0)
                k = gram.shape[0] - 1
                w0 = np.asarray(g.weight, np.float64).reshape(k, -1)
                b0 = np.zeros(w0.shape[1]) if g.bias is None else np.asarray(g.bias, np.float64)
                sol = _solve(gram, cross, np.concatenate([w0, b0[None]]), ridge=ridge)
                weight = sol[:-1].reshape(g.weight.shape).astype(np.float32)
                bias = sol[-1].astype(np.float32)
                new_ops[g.name] = replace(g, weight=weight, bias=bias)
                fmt = Precision.of(formats.get(g.name, base)).weights
                program.weights[g.name] = encode(weight, fmt, axis=reduction_axis(g.kind))
                program.biases[g.name] = bias
            qstep = lower_op(program, op.name, kernels=kernels)
            each(partial(_run, qstep, qenvs))
            if fstep is not None:
                each(partial(_run, fstep, fenvs))
            for envs in (qenvs, fenvs):
                for env in envs:
                    for t in dead[i]:
                        env.pop(t, None)
    return replace(graph, ops=[new_ops.get(g.name, g) for g in graph.ops])
