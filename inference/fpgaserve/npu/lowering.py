"""Op lowering: each op of a ``Program`` into a prepared ``Step`` the executor runs.

Role: called once per ``Executor`` (``lower_program``). A step holds what running the op needs,
computed once: weights dequantized from BFP into the layout the kernel wants, shapes, pads, and a
cycle count per batch size for the device's cost model. One builder per op kind
(``_OpLowering._prep_<kind>``); the kernels (numba or numpy, ``fpgaserve.npu.kernels``) do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.device import DeviceModel
from fpgaserve.npu.formats import BfpFormat
from fpgaserve.npu.gemm import TiledGemm
from fpgaserve.npu.kernels import Kernels
from fpgaserve.npu.program import Op, Program, op_activation_format, op_format

__all__ = ["Env", "Step", "lower_op", "lower_program", "prequantized_tensors"]

F32 = npt.NDArray[np.float32]
Env = dict[str, F32]


@dataclass(frozen=True)
class Step:
    run: Callable[[Env], None]
    cycles: Callable[[int, DeviceModel], int]  # batch size -> modeled cycles


def _pads(op: Op) -> tuple[int, int, int, int]:
    t, b, left, r = op.attrs.get("pads", (0, 0, 0, 0))
    return int(t), int(b), int(left), int(r)


def _out_hw(op: Op) -> tuple[int, int]:
    shape = op.attrs["out_shape"]
    return int(shape[0]), int(shape[1])


def _is_pointwise(op: Op, program: Program) -> bool:
    shape = program.weight_shapes.get(op.name, ())
    return (
        op.kind == "conv2d" and shape[:2] == (1, 1) and tuple(op.attrs.get("strides", (1, 1))) == (1, 1)
        and not any(op.attrs.get("pads", (0, 0, 0, 0)))
    )  # fmt: skip


def _prequantized_tensors(program: Program) -> dict[str, BfpFormat]:
    """Depthwise outputs whose only consumer is a stride-1 pointwise conv, with that conv's activation
    format: the depthwise kernel quantizes them, exactly as that conv would, in its epilogue."""
    found = {}
    for op in program.ops:
        if op.kind != "depthwise_conv2d" or op.output == program.output_name:
            continue
        users = [u for u in program.ops if op.output in u.inputs]
        if len(users) == 1 and _is_pointwise(users[0], program):
            found[op.output] = op_activation_format(users[0], program.fmt)
    return found


def prequantized_tensors(program: Program) -> dict[str, BfpFormat]:
    """The tensors a depthwise epilogue quantizes for its pointwise consumer, with their formats (the
    compiler's weight adaptation reads the consumer's input as the lowered op does)."""
    return _prequantized_tensors(program)


def lower_program(program: Program, *, kernels: Kernels) -> list[Step]:
    """The program's ops as prepared steps, in program order."""
    lowering = _OpLowering(program, kernels=kernels)
    return [lowering.prepare(op) for op in program.ops]


def lower_op(program: Program, name: str, *, kernels: Kernels) -> Step:
    """One op of the program as a prepared step, exactly as ``lower_program`` prepares it (the
    compiler's bias correction re-lowers one op at a time as its bias changes)."""
    return _OpLowering(program, kernels=kernels).prepare(program.op(name))


class _OpLowering:
    """The builders of one program's steps (they share its weights and prequantized tensors)."""

    def __init__(self, program: Program, *, kernels: Kernels) -> None:
        self.program = program
        self._kernels = kernels
        self._prequantized = _prequantized_tensors(program)

    def prepare(self, op: Op) -> Step:
        builder = getattr(self, f"_prep_{op.kind}", None)
        if builder is None:
            raise ValueError(f"op {op.name!r}: kind {op.kind!r} is not executable")
        step: Step = builder(op)
        return step

    def _prep_conv2d(self, op: Op) -> Step:
        w = self.program.dequantized_weight(op.name)
        kh, kw, cin, cout = w.shape
        wmat = np.ascontiguousarray(w.reshape(kh * kw * cin, cout))
        ho, wo = _out_hw(op)
        gemm = TiledGemm.build(weights=wmat, rows=ho * wo)  # fixed tiles per example: see gemm.py
        bias = self.program.biases.get(op.name)
        stride = int(op.attrs.get("strides", (1, 1))[0])  # the compiler only emits square strides
        pads = _pads(op)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._kernels

        # Weights were decoded in the op's weight format; activations are quantized in its activation format.
        fmt = op_activation_format(op, self.program.fmt)
        element_bits, activation_bits = (
            1 + op_format(op, self.program.fmt).mantissa_bits,
            1 + fmt.mantissa_bits,
        )
        pointwise = kh == 1 and kw == 1 and not any(pads)
        prequantized = src in self._prequantized

        def run(env: Env) -> None:
            x = env[src]
            n = x.shape[0]
            if prequantized:  # the producer already quantized it along channels, as we would
                cols = x.reshape(-1, cin)
            elif pointwise:  # 1x1: no patches needed, the stride subsamples while quantizing
                cols = k.quantize_window(x, fmt, stride=stride).reshape(-1, cin)
            else:
                xp = k.quantize_window(x, fmt, pads=pads)
                cols = k.im2col(xp, kh=kh, kw=kw, stride=stride, out_h=ho, out_w=wo)
            y = gemm(cols)
            k.bias_activation(y, bias, act)
            env[dst] = y.reshape(n, ho, wo, cout)

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.matrix_cycles(
                rows=batch * ho * wo, reduction=kh * kw * cin, outputs=cout, element_bits=element_bits,
                activation_bits=activation_bits,
            )  # fmt: skip

        return Step(run, cycles)

    def _prep_depthwise_conv2d(self, op: Op) -> Step:
        kh, kw = op.attrs["kernel"]
        w = np.ascontiguousarray(self.program.dequantized_weight(op.name).reshape(kh, kw, -1))
        c = w.shape[2]
        bias = self.program.biases.get(op.name)
        stride = int(op.attrs.get("strides", (1, 1))[0])
        pads = _pads(op)
        ho, wo = _out_hw(op)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._kernels
        fmt = op_activation_format(op, self.program.fmt)  # the input windows' (weights decoded above)
        # Quantizing for a pointwise consumer in this kernel's epilogue (in that consumer's format)
        # saves that conv a pass.
        output_fmt = self._prequantized.get(dst)

        def run(env: Env) -> None:
            env[dst] = k.depthwise_conv(
                env[src], w, fmt, stride=stride, pads=pads, out_h=ho, out_w=wo,
                bias=bias, activation=act, quantize_output=output_fmt is not None, output_fmt=output_fmt,
            )  # fmt: skip

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.vector_cycles(elements=batch * ho * wo * c * kh * kw)

        return Step(run, cycles)

    def _prep_dense(self, op: Op) -> Step:
        wmat = np.ascontiguousarray(self.program.dequantized_weight(op.name))  # (in, out)
        gemm = TiledGemm.build(weights=wmat, rows=1)  # one call per example: see gemm.py
        reduction, outputs = wmat.shape  # not wmat itself: the GEMM keeps its own column tiles
        bias = self.program.biases.get(op.name)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._kernels
        fmt = op_activation_format(op, self.program.fmt)
        element_bits, activation_bits = (
            1 + op_format(op, self.program.fmt).mantissa_bits,
            1 + fmt.mantissa_bits,
        )

        def run(env: Env) -> None:
            x = env[src]
            xq = k.quantize_window(x.reshape(x.shape[0], 1, 1, -1), fmt).reshape(x.shape)
            y = gemm(xq)
            k.bias_activation(y, bias, act)
            env[dst] = y

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.matrix_cycles(
                rows=batch, reduction=reduction, outputs=outputs, element_bits=element_bits,
                activation_bits=activation_bits,
            )  # fmt: skip

        return Step(run, cycles)

    def _vector_cycles(self, op: Op, taps: int = 1) -> Callable[[int, DeviceModel], int]:
        per_example = int(np.prod(op.attrs["out_shape"])) * taps
        return lambda batch, model: model.vector_cycles(elements=batch * per_example)

    def _prep_add(self, op: Op) -> Step:
        act = op.attrs.get("activation", "linear")
        srcs, dst = op.inputs, op.output
        k = self._kernels

        def run(env: Env) -> None:
            if len(srcs) == 2:  # a residual add: add and activation in one pass
                env[dst] = k.add_activation(env[srcs[0]], env[srcs[1]], act)
                return
            y = np.add(env[srcs[0]], env[srcs[1]])
            for s in srcs[2:]:
                y += env[s]
            k.bias_activation(y, None, act)
            env[dst] = y

        return Step(run, self._vector_cycles(op, taps=len(srcs) - 1))

    def _prep_activation(self, op: Op) -> Step:
        act = op.attrs["activation"]
        src, dst = op.inputs[0], op.output
        k = self._kernels

        def run(env: Env) -> None:
            y = env[src].copy()
            k.bias_activation(y, None, act)
            env[dst] = y

        return Step(run, self._vector_cycles(op))

    def _prep_scale_shift(self, op: Op) -> Step:
        scale = self.program.constants[f"{op.name}.scale"]
        shift = self.program.constants[f"{op.name}.shift"]
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._kernels

        def run(env: Env) -> None:
            y = env[src] * scale
            k.bias_activation(y, shift, act)
            env[dst] = y

        return Step(run, self._vector_cycles(op))

    def _prep_pad(self, op: Op) -> Step:
        t, b, left, r = _pads(op)
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            env[dst] = np.pad(env[src], ((0, 0), (t, b), (left, r), (0, 0)))

        return Step(run, self._vector_cycles(op))

    def _pool_taps(self, op: Op, reduce: Callable[[F32, F32], F32], init: float) -> Callable[[F32], F32]:
        ph, pw = op.attrs["pool"]
        sh, sw = op.attrs.get("strides", (ph, pw))
        t, b, left, r = _pads(op)
        pad_value = float(op.attrs.get("pad_value", init))
        ho, wo = _out_hw(op)

        def pooled(x: F32) -> F32:
            if t or b or left or r:
                x = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=pad_value)
            acc = np.full((x.shape[0], ho, wo, x.shape[3]), init, np.float32)
            for i in range(ph):
                for j in range(pw):
                    reduce(acc, x[:, i : i + sh * ho : sh, j : j + sw * wo : sw, :])
            return acc

        return pooled

    def _prep_max_pool(self, op: Op) -> Step:
        pooled = self._pool_taps(op, lambda acc, tap: np.maximum(acc, tap, out=acc), -np.inf)
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            env[dst] = pooled(env[src])

        ph, pw = op.attrs["pool"]
        return Step(run, self._vector_cycles(op, taps=ph * pw))

    def _prep_avg_pool(self, op: Op) -> Step:
        ph, pw = op.attrs["pool"]
        pooled = self._pool_taps(op, lambda acc, tap: np.add(acc, tap, out=acc), 0.0)
        src, dst = op.inputs[0], op.output
        inv = np.float32(1.0 / (ph * pw))

        def run(env: Env) -> None:
            y = pooled(env[src])
            y *= inv
            env[dst] = y

        return Step(run, self._vector_cycles(op, taps=ph * pw))

    def _prep_global_avg_pool(self, op: Op) -> Step:
        keepdims = bool(op.attrs.get("keepdims", False))
        src, dst = op.inputs[0], op.output
        in_shape = op.attrs["in_shape"]

        def run(env: Env) -> None:
            env[dst] = env[src].mean(axis=(1, 2), keepdims=keepdims, dtype=np.float32)

        per_example = int(np.prod(in_shape))
        return Step(run, lambda batch, model: model.vector_cycles(elements=batch * per_example))

    def _prep_reshape(self, op: Op) -> Step:
        target = tuple(int(d) for d in op.attrs["out_shape"])
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            x = env[src]
            env[dst] = x.reshape((x.shape[0], *target))

        return Step(run, lambda batch, model: 0)
