"""Profile of the emulated featurizer by op kind: where a batch of 1 and a batch of 8 spend their time.

For each model (``int12-bfp``) and way of running it, the CPU time per run split into GEMM (the
OpenBLAS calls of ``fpgaserve.npu.gemm``), activation quantization (``quantize_window``), depthwise
convolution (with its per-window quantization), im2col, bias + activation, residual adds and the
rest (pooling, reshapes, the executor itself, and the time of numba's worker threads, which the
per-kind clocks of the calling thread do not see), next to float TensorFlow's process CPU time in
the same run:

- batch 1 on one core, and spread over the cores (GEMM tiles and kernel row tiles on helper threads);
- batch 8 unsplit on one core, and in one part per core (the executor's default).

    python bench/npu_profile.py --models resnet50 efficientnet-lite0 --repeats 5

Each kind's figure is thread CPU time summed over the threads that ran it. On a loaded machine the
wall times move with the load; the CPU split does not.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fpgaserve.npu import DeviceModel, EmulatedDevice, Executor, gemm, get_format
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.sdk.zoo import get_zoo_model

KINDS = ("gemm", "quantize", "depthwise", "im2col", "bias+act", "add")
KERNELS = {
    "quantize_window": "quantize",
    "depthwise_conv": "depthwise",
    "im2col": "im2col",
    "bias_activation": "bias+act",
    "add_activation": "add",
}


class Clocks:
    """Thread CPU time per op kind, summed over the threads that run it."""

    def __init__(self) -> None:
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()

    def timed(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[kind] += time.thread_time() - start

        return run


class TimedKernels:
    """The executor's kernels, each call timed under its kind."""

    def __init__(self, kernels: Any, clocks: Clocks) -> None:
        for name, kind in KERNELS.items():
            setattr(self, name, clocks.timed(kind, getattr(kernels, name)))


def profile(name: str, repeats: int) -> None:
    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fpga import MODEL_PATH  # type: ignore[import-not-found]  # bench/ is not a package

    weights = "random" if name == "resnet50" else None
    program = get_zoo_model(
        name, model_path=MODEL_PATH, weights=weights, format=get_format("int12-bfp")
    ).program
    base = get_zoo_model(name, model_path=MODEL_PATH, weights=weights)
    float_fn = tf.function(lambda x: base.featurizer(x, training=False))
    clocks = Clocks()
    kernels = TimedKernels(load_kernels(), clocks)
    original_job = gemm.TiledGemm._job

    def timed_job(self: gemm.TiledGemm, **kwargs: Any) -> Callable[[], None]:
        job: Callable[[], None] = clocks.timed("gemm", original_job(self, **kwargs))
        return job

    device = DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0)
    one = Executor(program, device=EmulatedDevice(device), kernels=kernels, spread=False)  # type: ignore[arg-type]
    spread = Executor(program, device=EmulatedDevice(device), kernels=kernels, spread=True)  # type: ignore[arg-type]
    x = np.random.default_rng(0).uniform(-1, 1, (8, *program.input_shape)).astype(np.float32)
    cases: list[tuple[str, Callable[[np.ndarray], object], int, str]] = [
        ("batch 1, one core", one.run, 1, "off"),
        ("batch 1, spread", spread.run, 1, "off"),
        ("batch 8, unsplit, one core", one.run, 8, "off"),
        ("batch 8, one part per core", one.run, 8, "auto"),
    ]
    print(f"\n{name} int12-bfp, mean of {repeats}; load average {os.getloadavg()[0]:.2f}")
    print(
        "| case | wall ms | process CPU ms | "
        + " | ".join(f"{k} ms (%)" for k in KINDS)
        + " | rest ms (%) |\n|---|---|---|"
        + "---|" * (len(KINDS) + 1)
    )
    with mock.patch.object(gemm.TiledGemm, "_job", timed_job):
        for label, fn, b, parts in cases:
            os.environ["FPGASERVE_DATA_PARALLEL"] = parts
            fn(x[:b]), fn(x[:b])  # warm up: first-touch page faults
            clocks.seconds.clear()
            walls = []
            cpu_start = time.process_time()
            for _ in range(repeats):
                start = time.perf_counter()
                fn(x[:b])
                walls.append(time.perf_counter() - start)
            cpu = (time.process_time() - cpu_start) / repeats
            kinds = {k: clocks.seconds[k] / repeats for k in KINDS}
            rest = cpu - sum(kinds.values())
            cells = " | ".join(f"{v * 1e3:.1f} ({100 * v / cpu:.0f})" for v in kinds.values())
            print(
                f"| {label} | {statistics.median(walls) * 1e3:.1f} | {cpu * 1e3:.1f} | {cells} | "
                f"{rest * 1e3:.1f} ({100 * rest / cpu:.0f}) |",
                flush=True,
            )
    for b in (1, 8):
        float_fn(x[:b]).numpy(), float_fn(x[:b]).numpy()
        walls, cpu_start = [], time.process_time()
        for _ in range(repeats):
            start = time.perf_counter()
            float_fn(x[:b]).numpy()
            walls.append(time.perf_counter() - start)
        cpu = (time.process_time() - cpu_start) / repeats
        print(f"| batch {b}, TensorFlow float | {statistics.median(walls) * 1e3:.1f} | {cpu * 1e3:.1f} |")
    one.close()
    spread.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet-lite0"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name in args.models:
        profile(name, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
