"""A batch of one, spread over the cores and on one core, against float TensorFlow: this tree beside
another tree's venv, in alternating processes.

Each round starts one process per interpreter (this one, then ``--baseline-python``), in turn; a
process loads the model (``int12-bfp``), warms up, then times ``--repeats`` runs of each case
interleaved: float TensorFlow, the executor spread over the cores (``FPGASERVE_OP_PARALLEL=on``) and
on one core (``off``). It prints, per interpreter, the median wall time and process CPU time (the
helper threads' included) of every case over all rounds, and the ratios to TensorFlow's wall and
CPU time measured in the same processes.

    python bench/batch1.py --baseline-python /work/main/.venv/bin/python --rounds 3 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

__all__ = ["main"]

_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
from fpgaserve.npu import DeviceModel, EmulatedDevice, Executor, get_format
from fpgaserve.sdk.zoo import get_zoo_model
name, repeats = sys.argv[1], int(sys.argv[2])
weights = "random" if name == "resnet50" else None
path = "/tmp/fpgaserve-bench-models"
program = get_zoo_model(name, model_path=path, weights=weights, format=get_format("int12-bfp")).program
base = get_zoo_model(name, model_path=path, weights=weights)
float_fn = tf.function(lambda x: base.featurizer(x, training=False))
x = np.random.default_rng(0).uniform(-1, 1, (1, *program.input_shape)).astype(np.float32)
device = lambda: EmulatedDevice(DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0))
cases = {
    "tf": lambda: float_fn(x).numpy(),
    "spread": Executor(program, device=device(), spread=True).run,
    "single": Executor(program, device=device(), spread=False).run,
}
cases["spread"], cases["single"] = (lambda f=cases["spread"]: f(x)), (lambda f=cases["single"]: f(x))
for fn in cases.values():
    fn(); fn()
out = {k: {"wall": [], "cpu": []} for k in cases}
for _ in range(repeats):
    for k, fn in cases.items():
        w, c = time.perf_counter(), time.process_time()
        fn()
        out[k]["wall"].append(time.perf_counter() - w)
        out[k]["cpu"].append(time.process_time() - c)
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-python", help="another tree's venv interpreter")
    args = parser.parse_args(argv)
    pythons = {"this tree": sys.executable}
    if args.baseline_python:
        pythons["baseline"] = args.baseline_python
    for model in args.models:
        samples: dict[str, dict[str, dict[str, list[float]]]] = {}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for label, python in pythons.items():
                done = subprocess.run(
                    [python, "-c", _CHILD, model, str(args.repeats)],
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    raise SystemExit(f"{python} failed on {model}:\n{done.stderr[-3000:]}")
                got = json.loads(done.stdout.strip().splitlines()[-1])
                mine = samples.setdefault(label, {k: {"wall": [], "cpu": []} for k in got})
                for k, v in got.items():
                    for clock in ("wall", "cpu"):
                        mine[k][clock] += v[clock]
        print(
            f"\n{model}, int12-bfp, batch 1: medians of {args.rounds} x {args.repeats} runs; load average "
            f"{load:.2f} -> {os.getloadavg()[0]:.2f}"
        )
        print("| tree | case | wall ms | x TF wall | process CPU ms | x TF CPU |\n|---|---|---|---|---|---|")
        for label, cases in samples.items():
            tf_wall, tf_cpu = (statistics.median(cases["tf"][c]) for c in ("wall", "cpu"))
            for k, v in cases.items():
                w, c = statistics.median(v["wall"]), statistics.median(v["cpu"])
                print(
                    f"| {label} | {k} | {w * 1e3:.1f} | {w / tf_wall:.2f}x | {c * 1e3:.1f} | {c / tf_cpu:.2f}x |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
