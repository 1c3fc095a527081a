"""Benchmark of the executor's ways of running a batch, side by side: GEMMs in fixed tiles (now) or as
one OpenBLAS call per op and batch (before ``fpgaserve.npu.gemm``), spread over the cores or on one.

For each model (``int12-bfp``) it prints wall time and process CPU time per run, median of interleaved
repeats, next to float TensorFlow in the same run:

- batch 1: the whole GEMMs' spread mode (on OpenBLAS's threads), whole GEMMs on one core, the tiles shared with
  helper threads with the kernels' row tiles (the spread mode now; ``npu/share.py``), and the
  tiles on one core;
- batch 8: both GEMMs with the batch in one part per core.

    python bench/npu_modes.py --models efficientnet-lite0 resnet50 --repeats 9

The machine's load (printed) moves absolute figures; read the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import fpgaserve.npu.lowering
from fpgaserve.npu import DeviceModel, EmulatedDevice, Executor, get_format
from fpgaserve.sdk.zoo import get_zoo_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fpga import MODEL_PATH, WholeGemm  # type: ignore[import-not-found]  # bench/ is not a package


def executor(program: Any, *, tiles: bool, spread: bool) -> Executor:
    device = EmulatedDevice(DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0))  # fits every format
    if tiles:
        return Executor(program, device=device, spread=spread)
    with mock.patch.object(fpgaserve.npu.lowering, "TiledGemm", WholeGemm):  # read when steps are built
        return Executor(program, device=device, spread=spread)


def bench(name: str, repeats: int) -> None:
    import tensorflow as tf

    weights = "random" if name == "resnet50" else None
    program = get_zoo_model(
        name, model_path=MODEL_PATH, weights=weights, format=get_format("int12-bfp")
    ).program
    base = get_zoo_model(name, model_path=MODEL_PATH, weights=weights)
    float_fn = tf.function(lambda x: base.featurizer(x, training=False))
    x = np.random.default_rng(0).uniform(-1, 1, (8, *program.input_shape)).astype(np.float32)
    main_spread, main_single = (executor(program, tiles=False, spread=s) for s in (True, False))
    tiles_spread, tiles_single = (executor(program, tiles=True, spread=s) for s in (True, False))

    cases: dict[str, tuple[Callable[[np.ndarray], object], int]] = {
        "batch 1, main: spread (OpenBLAS + numba threads)": (main_spread.run, 1),
        "batch 1, main: one core": (main_single.run, 1),
        "batch 1, tiles spread (now)": (tiles_spread.run, 1),
        "batch 1, tiles on one core": (tiles_single.run, 1),
        "batch 1, TensorFlow float": (lambda b: float_fn(b).numpy(), 1),
        "batch 8, main (one part per core)": (main_single.run, 8),
        "batch 8, tiles (one part per core, now)": (tiles_single.run, 8),
        "batch 8, TensorFlow float": (lambda b: float_fn(b).numpy(), 8),
    }
    for fn, b in cases.values():  # warm up: first-touch page faults, tf.function tracing
        fn(x[:b]), fn(x[:b])
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (fn, b) in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(x[:b])
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    print(f"\n{name} int12-bfp, median of {repeats}; load average now {os.getloadavg()[0]:.2f}")
    print("| case | wall ms | x TF | process CPU ms |\n|---|---|---|---|")
    for k, (_, b) in cases.items():
        tf_wall = statistics.median(wall[f"batch {b}, TensorFlow float"])
        w = statistics.median(wall[k])
        print(
            f"| {k} | {w * 1e3:.1f} | {w / tf_wall:.2f}x | {statistics.median(cpu[k]) * 1e3:.1f} |",
            flush=True,
        )
    for ex in (main_spread, main_single, tiles_spread, tiles_single):
        ex.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name in args.models:
        bench(name, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
