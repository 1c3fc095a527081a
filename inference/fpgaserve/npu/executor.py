"""The executor: runs a device program on an emulated device, with numpy (and optionally numba).

Role: run batches through the steps ``lowering`` prepared once from a ``Program`` (weights
dequantized from BFP into the layout the kernel wants, shapes and costs precomputed), and model the
device time of a batch from the steps' cycle counts.
Called by the FPGA stage of a pipeline and by ``fpgaserve classify``.

Numerics: the input of every matrix-unit op is BFP-quantized along channels (the reduction axis at
each kernel tap, see docs/numerics.md), multiplied with the BFP weights, and accumulated in float32;
bias and activation run on the vector units in float32. ``run`` holds no shared mutable state, so
several threads may call it at once (numpy and numba release the GIL in the heavy parts).

Parallelism: a batch of one runs each op on all cores (its GEMM tiles and its kernels' row tiles
shared between the calling thread and helper threads, ``share.py``), or all of it on one core when
that measured faster on this host lately (``spread.py``). A larger batch is split into one part per
core, run side by side with each op on one core (``threads.py``): one synchronisation per batch
instead of one per op, which keeps throughput up when other threads take a core now and then
(EfficientNet-Lite0 at batch 8 on 2 cores: 70 -> 75 inputs/s in-process, 55 -> 67 inputs/s behind
the HTTP server). Results are bit-identical either way and whatever the batch: the GEMMs run each
example in fixed single-threaded tiles (``gemm.py``, docs/numerics.md) and the kernels' rows are
independent of each other. The numba kernels are single-threaded (no ``prange``): numba's own
thread pool is not used.
``FPGASERVE_DATA_PARALLEL`` = ``auto`` (default), ``0``/``off`` (never split), or a part count.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.allocator import tune_allocator
from fpgaserve.npu.device import EmulatedDevice
from fpgaserve.npu.kernels import Kernels, load_kernels
from fpgaserve.npu.lowering import Env, lower_program
from fpgaserve.npu.program import Program
from fpgaserve.npu.share import spread_tiles
from fpgaserve.npu.spread import SpreadChooser, spread_setting
from fpgaserve.npu.threads import available_cores, blas_single_threaded

__all__ = ["ExecutionResult", "Executor", "InputShapeError"]

F32 = npt.NDArray[np.float32]
HOST_BYTES_PER_VALUE = 2  # activations cross the host link as fp16


class InputShapeError(ValueError):
    """The batch does not have the shape the program was compiled for."""


@dataclass(frozen=True)
class ExecutionResult:
    outputs: F32
    device_seconds: float  # modeled time on the emulated FPGA
    wall_seconds: float  # time the emulation took on this host


class Executor:
    """Runs one program on one emulated device; reserves the program's weight memory on it."""

    def __init__(
        self,
        program: Program,
        *,
        device: EmulatedDevice | None = None,
        kernels: Kernels | None = None,
        spread: bool | None = None,
    ) -> None:
        """``spread``: whether an unsplit batch spreads its ops over the cores (True), runs on one
        (False), or whichever measures faster (None, the default: ``FPGASERVE_OP_PARALLEL``)."""
        tune_allocator()  # reuse freed activation buffers: see allocator.py
        self.program = program
        self.device = device if device is not None else EmulatedDevice()
        self._k = kernels if kernels is not None else load_kernels()
        self._key = f"{program.name}/{uuid.uuid4().hex[:8]}"
        self.device.load(key=self._key, nbytes=program.weight_bytes)
        self._steps = lower_program(program, kernels=self._k)
        self._spread = spread if spread is not None else spread_setting()  # a bad setting fails here
        self._choosers: dict[int, SpreadChooser] = {}
        self._choosers_lock = threading.Lock()

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
        if not x.flags.writeable:
            # A read-only batch (np.frombuffer of a request) would be another type for every numba
            # kernel, compiled apart from the ones ``fpgaserve warm-kernels`` put in the image.
            x = x.copy()
        if x.ndim != len(self.program.input_shape) + 1 or x.shape[1:] != tuple(self.program.input_shape):
            raise InputShapeError(
                f"program {self.program.name!r} expects input of shape (N, "
                f"{', '.join(map(str, self.program.input_shape))}), got {tuple(x.shape)}"
            )
        parts = self._parts(x.shape[0])
        out = self._run_split(x, parts) if parts > 1 else self._run_unsplit(x)
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

    def _run_unsplit(self, x: F32) -> F32:
        """One part: every op spread over the cores, or all on this thread, whichever the chooser of
        this batch size measured faster on this host lately (``spread.py``)."""
        n = x.shape[0]
        with self._choosers_lock:
            chooser = self._choosers.get(n)
            if chooser is None:
                chooser = self._choosers[n] = SpreadChooser(fixed=self._spread)
        spread = chooser.choose()
        start = time.perf_counter()
        out = self._run_spread(x) if spread else self._run_single(x)
        chooser.record(spread, time.perf_counter() - start)
        return out

    def _run_spread(self, x: F32) -> F32:
        with blas_single_threaded(), spread_tiles():
            return self._run_steps(x)

    def _run_single(self, x: F32) -> F32:
        with blas_single_threaded():
            return self._run_steps(x)

    def _run_steps(self, x: F32) -> F32:
        env: Env = {self.program.input_name: x}
        for step in self._steps:
            step.run(env)
        return env[self.program.output_name]

    def _run_split(self, x: F32, parts: int) -> F32:
        """Data parallelism: the batch in ``parts`` slices, one thread each, each op on one core.

        Every op treats examples independently, so the outputs are bit-identical to one run."""
        chunks = np.array_split(x, parts)
        with blas_single_threaded():
            futures: list[Future[F32]] = [_pool().submit(self._run_steps, c) for c in chunks[1:]]
            try:
                first = self._run_steps(chunks[0])
            finally:
                rest = [f.result() for f in futures]
        return np.concatenate([first, *rest])


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the parts of split batches, shared by all executors (created on first use)."""
    return ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="fpgaserve-npu")
