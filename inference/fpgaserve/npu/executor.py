"""The executor: runs a device program on an emulated device, with numpy (and optionally numba).

Role: turn each op of a ``Program`` into a prepared step once (weights dequantized from BFP into the
layout the kernel wants, shapes and costs precomputed), then run batches through those steps.
Called by the FPGA stage of a pipeline and by ``fpgaserve classify``.

Numerics: the input of every matrix-unit op is BFP-quantized along channels (the reduction axis at
each kernel tap, see docs/numerics.md), multiplied with the BFP weights, and accumulated in float32;
bias and activation run on the vector units in float32. ``run`` holds no shared mutable state, so
several threads may call it at once (numpy and numba release the GIL in the heavy parts).

Parallelism: a batch of one runs each op on all cores (numba ``prange``, OpenBLAS threads). A larger
batch is split into one part per core, run side by side with each op on one core (``threads.py``):
one synchronisation per batch instead of one per op, which keeps throughput up when other threads
take a core now and then (EfficientNet-Lite0 at batch 8 on 2 cores: 70 -> 75 inputs/s in-process,
55 -> 67 inputs/s behind the HTTP server). Results are bit-identical either way (tested).
``FPGASERVE_DATA_PARALLEL`` = ``auto`` (default), ``0``/``off`` (never split), or a part count.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.allocator import tune_allocator
from fpgaserve.npu.device import DeviceModel, EmulatedDevice
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.program import Op, Program
from fpgaserve.npu.threads import available_cores, blas_single_threaded, single_threaded

__all__ = ["ExecutionResult", "Executor", "InputShapeError"]

F32 = npt.NDArray[np.float32]
Env = dict[str, F32]
HOST_BYTES_PER_VALUE = 2  # activations cross the host link as fp16


class InputShapeError(ValueError):
    """The batch does not have the shape the program was compiled for."""


@dataclass(frozen=True)
class ExecutionResult:
    outputs: F32
    device_seconds: float  # modeled time on the emulated FPGA
    wall_seconds: float  # time the emulation took on this host


@dataclass(frozen=True)
class _Step:
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


def _prequantized_tensors(program: Program) -> set[str]:
    """Depthwise outputs whose only consumer is a stride-1 pointwise conv: the depthwise kernel
    quantizes them, exactly as that conv would, in its epilogue."""
    found = set()
    for op in program.ops:
        if op.kind != "depthwise_conv2d" or op.output == program.output_name:
            continue
        users = [u for u in program.ops if op.output in u.inputs]
        if len(users) == 1 and _is_pointwise(users[0], program):
            found.add(op.output)
    return found


class Executor:
    """Runs one program on one emulated device; reserves the program's weight memory on it."""

    def __init__(
        self, program: Program, *, device: EmulatedDevice | None = None, kernels: ModuleType | None = None
    ) -> None:
        tune_allocator()  # reuse freed activation buffers: see allocator.py
        self.program = program
        self.device = device if device is not None else EmulatedDevice()
        self._k = kernels if kernels is not None else load_kernels()
        self._key = f"{program.name}/{uuid.uuid4().hex[:8]}"
        self.device.load(key=self._key, nbytes=program.weight_bytes)
        self._prequantized = _prequantized_tensors(program)
        self._steps = [self._prepare(op) for op in program.ops]

    def close(self) -> None:
        """Release the program's weight memory on the device."""
        self.device.unload(key=self._key)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def modeled_seconds(self, batch: int) -> float:
        """Modeled device time of one batch: compute cycles plus host-link transfers."""
        model = self.device.model
        cycles = sum(step.cycles(batch, model) for step in self._steps)
        values = batch * (int(np.prod(self.program.input_shape)) + int(np.prod(self.program.output_shape)))
        return model.seconds(cycles) + model.transfer_seconds(nbytes=values * HOST_BYTES_PER_VALUE)

    def run(self, batch: npt.ArrayLike) -> ExecutionResult:
        """Run a float32 batch (N, *input_shape) and return the program's outputs with timings."""
        start = time.perf_counter()
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != len(self.program.input_shape) + 1 or x.shape[1:] != tuple(self.program.input_shape):
            raise InputShapeError(
                f"program {self.program.name!r} expects input of shape (N, "
                f"{', '.join(map(str, self.program.input_shape))}), got {tuple(x.shape)}"
            )
        parts = self._parts(x.shape[0])
        out = self._run_split(x, parts) if parts > 1 else self._run_steps(x)
        return ExecutionResult(
            outputs=out,
            device_seconds=self.modeled_seconds(x.shape[0]),
            wall_seconds=time.perf_counter() - start,
        )

    def _parts(self, n: int) -> int:
        """How many parts to run batch ``n`` in side by side (1: every op spread over the cores)."""
        if n < 2:
            return 1
        setting = os.environ.get("FPGASERVE_DATA_PARALLEL", "auto").strip().lower()
        if setting in ("0", "1", "off", "false", "no"):
            return 1
        if setting in ("auto", "on", "true", "yes", ""):
            wanted = available_cores()
        elif setting.isdigit():
            wanted = int(setting)
        else:
            raise ValueError(
                f"FPGASERVE_DATA_PARALLEL must be auto, off or a number of parts, got {setting!r}"
            )
        return max(1, min(n, wanted))

    def _run_steps(self, x: F32) -> F32:
        env: Env = {self.program.input_name: x}
        for step in self._steps:
            step.run(env)
        return env[self.program.output_name]

    def _run_part(self, x: F32) -> F32:
        with single_threaded():
            return self._run_steps(x)

    def _run_split(self, x: F32, parts: int) -> F32:
        """Data parallelism: the batch in ``parts`` slices, one thread each, each op on one core.

        Every op treats examples independently, so the outputs are bit-identical to one run."""
        chunks = np.array_split(x, parts)
        with blas_single_threaded():
            futures: list[Future[F32]] = [_pool().submit(self._run_part, c) for c in chunks[1:]]
            try:
                first = self._run_part(chunks[0])
            finally:
                rest = [f.result() for f in futures]
        return np.concatenate([first, *rest])

    # -- preparation: one builder per op kind -------------------------------------------------

    def _prepare(self, op: Op) -> _Step:
        builder = getattr(self, f"_prep_{op.kind}", None)
        if builder is None:
            raise ValueError(f"op {op.name!r}: kind {op.kind!r} is not executable")
        step: _Step = builder(op)
        return step

    def _prep_conv2d(self, op: Op) -> _Step:
        w = self.program.dequantized_weight(op.name)
        kh, kw, cin, cout = w.shape
        wmat = np.ascontiguousarray(w.reshape(kh * kw * cin, cout))
        bias = self.program.biases.get(op.name)
        stride = int(op.attrs.get("strides", (1, 1))[0])  # the compiler only emits square strides
        pads = _pads(op)
        ho, wo = _out_hw(op)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._k

        fmt = self.program.fmt
        element_bits = 1 + fmt.mantissa_bits
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
            y = cols @ wmat
            k.bias_activation(y, bias, act)
            env[dst] = y.reshape(n, ho, wo, cout)

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.matrix_cycles(
                rows=batch * ho * wo, reduction=kh * kw * cin, outputs=cout, element_bits=element_bits
            )

        return _Step(run, cycles)

    def _prep_depthwise_conv2d(self, op: Op) -> _Step:
        kh, kw = op.attrs["kernel"]
        w = np.ascontiguousarray(self.program.dequantized_weight(op.name).reshape(kh, kw, -1))
        c = w.shape[2]
        bias = self.program.biases.get(op.name)
        stride = int(op.attrs.get("strides", (1, 1))[0])
        pads = _pads(op)
        ho, wo = _out_hw(op)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._k
        fmt = self.program.fmt
        # Quantizing for a pointwise consumer in this kernel's epilogue saves that conv a pass.
        quantize_output = dst in self._prequantized

        def run(env: Env) -> None:
            env[dst] = k.depthwise_conv(
                env[src], w, fmt, stride=stride, pads=pads, out_h=ho, out_w=wo,
                bias=bias, activation=act, quantize_output=quantize_output,
            )  # fmt: skip

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.vector_cycles(elements=batch * ho * wo * c * kh * kw)

        return _Step(run, cycles)

    def _prep_dense(self, op: Op) -> _Step:
        wmat = np.ascontiguousarray(self.program.dequantized_weight(op.name))  # (in, out)
        bias = self.program.biases.get(op.name)
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._k
        fmt = self.program.fmt
        element_bits = 1 + fmt.mantissa_bits

        def run(env: Env) -> None:
            x = env[src]
            xq = k.quantize_window(x.reshape(x.shape[0], 1, 1, -1), fmt).reshape(x.shape)
            y = xq @ wmat
            k.bias_activation(y, bias, act)
            env[dst] = y

        def cycles(batch: int, model: DeviceModel) -> int:
            return model.matrix_cycles(
                rows=batch, reduction=wmat.shape[0], outputs=wmat.shape[1], element_bits=element_bits
            )

        return _Step(run, cycles)

    def _vector_cycles(self, op: Op, taps: int = 1) -> Callable[[int, DeviceModel], int]:
        per_example = int(np.prod(op.attrs["out_shape"])) * taps
        return lambda batch, model: model.vector_cycles(elements=batch * per_example)

    def _prep_add(self, op: Op) -> _Step:
        act = op.attrs.get("activation", "linear")
        srcs, dst = op.inputs, op.output
        k = self._k

        def run(env: Env) -> None:
            y = np.add(env[srcs[0]], env[srcs[1]])
            for s in srcs[2:]:
                y += env[s]
            k.bias_activation(y, None, act)
            env[dst] = y

        return _Step(run, self._vector_cycles(op, taps=len(srcs) - 1))

    def _prep_activation(self, op: Op) -> _Step:
        act = op.attrs["activation"]
        src, dst = op.inputs[0], op.output
        k = self._k

        def run(env: Env) -> None:
            y = env[src].copy()
            k.bias_activation(y, None, act)
            env[dst] = y

        return _Step(run, self._vector_cycles(op))

    def _prep_scale_shift(self, op: Op) -> _Step:
        scale = self.program.constants[f"{op.name}.scale"]
        shift = self.program.constants[f"{op.name}.shift"]
        act = op.attrs.get("activation", "linear")
        src, dst = op.inputs[0], op.output
        k = self._k

        def run(env: Env) -> None:
            y = env[src] * scale
            k.bias_activation(y, shift, act)
            env[dst] = y

        return _Step(run, self._vector_cycles(op))

    def _prep_pad(self, op: Op) -> _Step:
        t, b, left, r = _pads(op)
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            env[dst] = np.pad(env[src], ((0, 0), (t, b), (left, r), (0, 0)))

        return _Step(run, self._vector_cycles(op))

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

    def _prep_max_pool(self, op: Op) -> _Step:
        pooled = self._pool_taps(op, lambda acc, tap: np.maximum(acc, tap, out=acc), -np.inf)
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            env[dst] = pooled(env[src])

        ph, pw = op.attrs["pool"]
        return _Step(run, self._vector_cycles(op, taps=ph * pw))

    def _prep_avg_pool(self, op: Op) -> _Step:
        ph, pw = op.attrs["pool"]
        pooled = self._pool_taps(op, lambda acc, tap: np.add(acc, tap, out=acc), 0.0)
        src, dst = op.inputs[0], op.output
        inv = np.float32(1.0 / (ph * pw))

        def run(env: Env) -> None:
            y = pooled(env[src])
            y *= inv
            env[dst] = y

        return _Step(run, self._vector_cycles(op, taps=ph * pw))

    def _prep_global_avg_pool(self, op: Op) -> _Step:
        keepdims = bool(op.attrs.get("keepdims", False))
        src, dst = op.inputs[0], op.output
        in_shape = op.attrs["in_shape"]

        def run(env: Env) -> None:
            env[dst] = env[src].mean(axis=(1, 2), keepdims=keepdims, dtype=np.float32)

        per_example = int(np.prod(in_shape))
        return _Step(run, lambda batch, model: model.vector_cycles(elements=batch * per_example))

    def _prep_reshape(self, op: Op) -> _Step:
        target = tuple(int(d) for d in op.attrs["out_shape"])
        src, dst = op.inputs[0], op.output

        def run(env: Env) -> None:
            x = env[src]
            env[dst] = x.reshape((x.shape[0], *target))

        return _Step(run, lambda batch, model: 0)


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the parts of split batches, shared by all executors (created on first use)."""
    return ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="fpgaserve-npu")
