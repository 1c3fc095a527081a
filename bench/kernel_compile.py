"""Cold compile of the executor's numba kernels, per kernel: each in a fresh process with an empty cache.

For each interpreter given (this one, and ``--baseline-python`` for another tree's venv, interleaved
run by run), a subprocess with ``NUMBA_CACHE_DIR`` pointed at an empty temporary directory runs
``fpgaserve warm-kernels``' exercise of one format and times every ``Dispatcher.compile`` (inclusive
of what numba compiles inside it; the first kernel also pays numba's one-time costs). It prints the
median per kernel, the whole exercise's wall time and its process CPU time.

    python bench/kernel_compile.py --format int12-bfp --runs 3 --baseline-python /work/main/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

__all__ = ["main"]

_CHILD = r"""
import json, os, sys, time
import numba.core.dispatcher as d
times = {}
depth = [0]
original = d.Dispatcher.compile
def timed(self, sig):
    depth[0] += 1
    start = time.perf_counter()
    try:
        return original(self, sig)
    finally:
        depth[0] -= 1
        if depth[0] == 0:
            name = self.py_func.__qualname__.replace("<locals>.", "")
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
d.Dispatcher.compile = timed
from fpgaserve.npu.formats import get_format
from fpgaserve.npu.precompile import warm_kernels
cpu, wall = time.process_time(), time.perf_counter()
warm_kernels(formats=[get_format(sys.argv[1])])
print(json.dumps({"kernels": times, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""


def _one(python: str, fmt: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fpgaserve-cold-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        env.pop("FPGASERVE_KERNEL_CACHE", None)
        done = subprocess.run(
            [python, "-c", _CHILD, fmt], env=env, capture_output=True, text=True, check=True
        )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", default="int12-bfp")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-python", help="another venv's interpreter, run interleaved")
    args = parser.parse_args(argv)
    pythons = {"this tree": sys.executable}
    if args.baseline_python:
        pythons = {"baseline": args.baseline_python, **pythons}
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in pythons}
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the start", flush=True)
    for _ in range(args.runs):
        for name, python in pythons.items():
            runs[name].append(_one(python, args.format))
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")
    names = sorted({k for rs in runs.values() for r in rs for k in r["kernels"]})  # type: ignore[attr-defined]
    print("| kernel | " + " | ".join(pythons) + " |")
    print("|---|" + "---|" * len(pythons))
    for kernel in names:
        cells = [statistics.median(r["kernels"].get(kernel, 0.0) for r in runs[n]) for n in pythons]  # type: ignore[attr-defined]
        print(f"| `{kernel}` | " + " | ".join(f"{c:.2f} s" for c in cells) + " |")
    for key in ("wall", "cpu"):
        cells = [statistics.median(float(r[key]) for r in runs[n]) for n in pythons]  # type: ignore[arg-type]
        print(f"| whole exercise, {key} | " + " | ".join(f"{c:.2f} s" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
