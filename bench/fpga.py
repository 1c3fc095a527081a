"""Benchmark of the emulated FPGA: numerical agreement with float TensorFlow, and latency.

For each zoo model and BFP format it prints one table row: feature cosine similarity, top-1 and
top-5 agreement with the float Keras model on real photos (scikit-image's bundled photos plus crops,
flips and scales of them), modeled device latency, and emulation wall latency at batch 1 and 8 next
to the float TensorFlow model measured in the same run (interleaved, median of repeats).

Format ``auto`` is the mixed-precision program (per layer the narrowest format that keeps the zoo's
accuracy budget on its calibration photos, which share no photo with the benchmark's: see
``fpgaserve.sdk.calibration``); its "compile s" is the precision search's time.

    python bench/fpga.py                       # everything (~3 minutes on 2 cores, plus the searches)
    python bench/fpga.py --models efficientnet-lite0 --formats int12-bfp msfp16 auto --json out.json
    python bench/fpga.py --models efficientnet-lite0 --formats msfp16 msfp16+bc auto+bc   # bias correction
    python bench/fpga.py --models efficientnet-lite0 --formats auto auto+permute   # weights adapted

``--baseline-kernels REF`` also times the numba kernels of git revision REF (e.g. ``main``) on the same
program, with every op of a batch of one spread over the cores as before issue 14 (or, with
``--baseline-chooses``, spread or one core by measured time as the current executor does),
interleaved with the current executor and TensorFlow: before/after ratios from one run. Kernels the
current lowering calls that REF lacks are composed from REF's own, in the passes REF's executor made.
``--baseline-whole-gemms`` also gives the baseline the GEMMs from before fixed tiles (one OpenBLAS call
per op and batch, on OpenBLAS's threads when a batch of one spreads): with ``--baseline-kernels main
--baseline-chooses`` the baseline is the executor of before the tiles.

ResNet-50 uses seeded random weights here (Keras's ImageNet weights need a network), so its
agreement numbers measure numerical fidelity, not accuracy on a trained model.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import fpgaserve.npu

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fpgaserve.npu import DEFAULT_FORMAT, FORMATS, EmulatedDevice, Executor, get_format
from fpgaserve.npu.formats import AUTO_FORMAT, DEFAULT_BUDGET
from fpgaserve.sdk.calibration import BENCHMARK_PHOTOS, variants
from fpgaserve.sdk.zoo import QuantizedModel, get_zoo_model

# Inputs where the float model's top-1 beats its top-2 by more than this are "decisive": there a
# flip means the FPGA changed the answer, not that two near-equal classes swapped.
DECISIVE_MARGIN = 0.1

# A format name ending in this (``msfp16+bc``, ``auto+bc``) compiles with bias correction on the
# calibration photos (fpgaserve.compiler.bias_correction).
CORRECTED = "+bc"
# ... ending in ``+permute``, ``+refit`` or ``+permute+refit`` (``auto+permute``) adapts the weights to
# the formats on the calibration photos (fpgaserve.compiler.permute / adapt).
ADAPTED = ("+permute+refit", "+permute", "+refit")
MODEL_PATH = "/tmp/fpgaserve-bench-models"  # compiled programs (and searched ones) are kept here

# Real photos bundled with scikit-image (files in skimage/data; synthetic images left out). The
# calibration photos of format "auto" are others (a test checks the two sets stay apart).
PHOTOS = BENCHMARK_PHOTOS


def photo_set(min_count: int = 100) -> list[np.ndarray]:
    """Bundled photos and variants: original, flip, five crops, two scales (uint8 RGB)."""
    import skimage.data
    import skimage.io
    from skimage.util import img_as_ubyte

    folder = os.path.dirname(skimage.data.__file__)
    images = []
    for name in PHOTOS:
        img = skimage.io.imread(os.path.join(folder, name))
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images += variants(img_as_ubyte(img[..., :3]))  # the calibration set's variants are the same kind
    if len(images) < min_count:
        raise SystemExit(f"only {len(images)} photos available, need {min_count}")
    return images


def _tf_numpy(fn: Callable[[Any], Any], x: Any) -> Any:
    """TensorFlow's answer as numpy: the copy out of the tensor is part of what TensorFlow pays."""
    return fn(x).numpy()


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(model: QuantizedModel, executor: Executor, batch: np.ndarray, ref_feats: np.ndarray,
              ref_probs: np.ndarray) -> dict[str, float]:  # fmt: skip
    feats = np.concatenate([executor.run(batch[i : i + 8]).outputs for i in range(0, len(batch), 8)])
    probs = model.classifier.predict(feats, verbose=0, batch_size=64)
    cos = (feats * ref_feats).sum(1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(ref_feats, axis=1)
    top5 = np.argsort(probs, axis=1)[:, ::-1][:, :5]
    ref_top = ref_probs.argmax(1)
    ranked = np.sort(ref_probs, axis=1)
    decisive = ranked[:, -1] - ranked[:, -2] > DECISIVE_MARGIN
    return {
        "decisive_inputs": int(decisive.sum()),
        "top1_decisive": float((top5[decisive, 0] == ref_top[decisive]).mean()),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1": float((top5[:, 0] == ref_top).mean()),
        "top5": float(np.mean([r in t for r, t in zip(ref_top, top5, strict=True)])),
    }


def load_baseline_kernels(ref: str) -> Any:
    """``fpgaserve/npu/kernels_numba.py`` as of git revision ``ref``, as a module of its own (its numba
    cache lives beside a copy in a temporary directory)."""
    import importlib.util
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(
        ["git", "show", f"{ref}:inference/fpgaserve/npu/kernels_numba.py"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = os.path.join(tempfile.mkdtemp(prefix="fpgaserve-baseline-"), "kernels_baseline.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("kernels_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels_baseline"] = module
    spec.loader.exec_module(module)
    _compose_missing_kernels(module)
    return module


def _compose_missing_kernels(module: Any) -> None:
    """Kernels this revision's lowering calls that an older ``module`` lacks, composed from its own, in
    the passes its executor made: the residual add (numpy add, then activation)."""

    def add_activation(a: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
        y: np.ndarray = np.add(a, b)
        module.bias_activation(y, None, activation)
        return y

    if not hasattr(module, "add_activation"):
        module.add_activation = add_activation


class WholeGemm:
    """The GEMMs before fixed tiles (``fpgaserve.npu.gemm``): one OpenBLAS call per op and batch, on
    OpenBLAS's threads when the executor spreads a batch of one."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    @classmethod
    def build(cls, *, weights: np.ndarray, rows: int) -> WholeGemm:
        return cls(weights)

    def __call__(self, cols: np.ndarray) -> np.ndarray:
        from fpgaserve.npu import share, threads

        blas = threads._openblas()
        if blas is None or not share.spreading():
            whole: np.ndarray = cols @ self.weights
            return whole
        blas[1](threads.available_cores())  # the executor set one thread for its tiles
        try:
            spread: np.ndarray = cols @ self.weights
        finally:
            blas[1](1)
        return spread


def baseline_executor(
    program: Any, *, device: Any, kernels: Any, spread: bool | None, whole_gemms: bool
) -> Executor:
    """The baseline's executor: REF's kernels, and with ``whole_gemms`` the GEMMs from before the tiles."""
    from unittest import mock

    import fpgaserve.npu.lowering

    if not whole_gemms:
        return Executor(program, device=device, kernels=kernels, spread=spread)
    with mock.patch.object(fpgaserve.npu.lowering, "TiledGemm", WholeGemm):  # read when the steps are built
        return Executor(program, device=device, kernels=kernels, spread=spread)


def bench_model(
    name: str,
    formats: list[str],
    images: list[np.ndarray],
    repeats: int,
    budgets: list[str],
    baseline: Any = None,
    model_path: str = MODEL_PATH,
    candidates: str | None = None,
    baseline_spread: bool | None = True,
    baseline_whole_gemms: bool = False,
) -> list[dict[str, Any]]:
    import tensorflow as tf

    weights = "random" if name == "resnet50" else None
    base = get_zoo_model(name, model_path=model_path, weights=weights)
    batch = np.concatenate([base.preprocess(img) for img in images])
    float_fn = tf.function(lambda x: base.featurizer(x, training=False))
    ref_feats = np.concatenate([float_fn(batch[i : i + 8]).numpy() for i in range(0, len(batch), 8)])
    ref_probs = base.classifier.predict(ref_feats, verbose=0, batch_size=64)
    rows = []
    runs = [(f, b) for f in formats for b in (budgets if _split(f)[0] == AUTO_FORMAT else [DEFAULT_BUDGET])]
    for fmt_name, budget in runs:
        base_name, corrected, adapted = _split(fmt_name)
        fmt: Any = AUTO_FORMAT if base_name == AUTO_FORMAT else get_format(base_name)
        auto = {"budget": budget, "candidates": candidates} if base_name == AUTO_FORMAT else {}
        model = get_zoo_model(
            name,
            model_path=model_path,
            weights=weights,
            format=fmt,
            bias_correction=corrected,
            adapt=adapted,
            **auto,
        )
        start = time.perf_counter()
        program = model.program if model.program_path.exists() else None
        if program is None and (model.auto or corrected or adapted is not None):
            program = model.program  # runs the precision search and/or the bias correction
        elif program is None:
            from fpgaserve.compiler.compile import compile_keras

            program = compile_keras(model.featurizer, fmt=model.fmt, input_shape=model.input_shape, name=name)
        compile_s = float(
            program.metadata.get("precision", {}).get("searchSeconds", time.perf_counter() - start)
        )
        big = fpgaserve.npu.DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0)  # fits every format
        with Executor(program, device=EmulatedDevice(big)) as ex:
            label = f"auto ({model.budget}: {_format_counts(program)})" if model.auto else base_name
            label += (
                " + bias correction" if corrected else f" + weights adapted ({adapted})" if adapted else ""
            )
            row: dict[str, Any] = {"model": name, "weights": model.weights, "format": label,
                                   "compile_s": compile_s, "weight_MiB": program.weight_bytes / 2**20}  # fmt: skip
            row.update(agreement(model, ex, batch, ref_feats, ref_probs))
            # The baseline as it ran before issue 14: every op of a batch of one spread over the cores.
            old = (
                baseline_executor(
                    program,
                    device=EmulatedDevice(big),
                    kernels=baseline,
                    spread=baseline_spread,
                    whole_gemms=baseline_whole_gemms,
                )
                if baseline
                else None
            )
            for b in (1, 8):
                x = batch[:b]
                ex.run(x), float_fn(x)  # warm both
                if old is not None:
                    old.run(x)
                fpga_t, tf_t, old_t = [], [], []
                for _ in range(repeats):  # interleaved so that machine noise hits both alike
                    fpga_t.append(median_seconds(functools.partial(ex.run, x), 1))
                    tf_t.append(median_seconds(functools.partial(_tf_numpy, float_fn, x), 1))
                    if old is not None:
                        old_t.append(median_seconds(functools.partial(old.run, x), 1))
                row[f"wall_b{b}_ms"] = statistics.median(fpga_t) * 1e3
                row[f"tf_b{b}_ms"] = statistics.median(tf_t) * 1e3
                row[f"device_b{b}_ms"] = ex.modeled_seconds(b) * 1e3
                if old is not None:
                    row[f"baseline_b{b}_ms"] = statistics.median(old_t) * 1e3
            if old is not None:
                old.close()
        rows.append(row)
        print(format_row(row), flush=True)
        if baseline is not None:
            print(format_baseline(row), flush=True)
    return rows


def _split(fmt_name: str) -> tuple[str, bool, str | None]:
    """A --formats entry: (format or auto, bias correction?, weight adaptation or None)."""
    if fmt_name.endswith(CORRECTED):
        return fmt_name.removesuffix(CORRECTED), True, None
    for suffix in ADAPTED:
        if fmt_name.endswith(suffix):
            return fmt_name.removesuffix(suffix), False, suffix[1:]
    return fmt_name, False, None


def _format_counts(program: Any) -> str:
    counts = program.summary().get("formatCounts", {program.fmt.name: len(program.layer_formats())})
    return ", ".join(f"{n} {f}" for f, n in sorted(counts.items(), key=lambda kv: -kv[1]))


HEADER = (
    "| model | format | weights MiB | cos mean | cos min | top-1 | top-5 | top-1 decisive (n) | device b1 ms "
    "| device b8 ms "
    "| FPGA wall b1 ms | TF b1 ms | ratio b1 | FPGA wall b8 ms | TF b8 ms | ratio b8 | compile s |\n"
    "|" + "---|" * 17
)


def format_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['model']} ({r['weights']}) | {r['format']} | {r['weight_MiB']:.1f} | {r['cosine_mean']:.4f} "
        f"| {r['cosine_min']:.4f} | {r['top1']:.1%} | {r['top5']:.1%} "
        f"| {r['top1_decisive']:.1%} ({r['decisive_inputs']}) | {r['device_b1_ms']:.3f} "
        f"| {r['device_b8_ms']:.3f} | {r['wall_b1_ms']:.1f} | {r['tf_b1_ms']:.1f} "
        f"| {r['wall_b1_ms'] / r['tf_b1_ms']:.2f}x | {r['wall_b8_ms']:.1f} | {r['tf_b8_ms']:.1f} "
        f"| {r['wall_b8_ms'] / r['tf_b8_ms']:.2f}x | {r['compile_s']:.1f} |"
    )


def format_baseline(r: dict[str, Any]) -> str:
    return (
        f"|   baseline kernels | {r['format']} | b1 {r['baseline_b1_ms']:.1f} ms = "
        f"{r['baseline_b1_ms'] / r['tf_b1_ms']:.2f}x TF (now {r['wall_b1_ms'] / r['tf_b1_ms']:.2f}x) "
        f"| b8 {r['baseline_b8_ms']:.1f} ms = {r['baseline_b8_ms'] / r['tf_b8_ms']:.2f}x TF "
        f"(now {r['wall_b8_ms'] / r['tf_b8_ms']:.2f}x) |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument(
        "--formats",
        nargs="+",
        default=[DEFAULT_FORMAT.name, *(f for f in FORMATS if f != DEFAULT_FORMAT.name), AUTO_FORMAT],
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per batch size")
    parser.add_argument(
        "--budgets", nargs="+", default=[DEFAULT_BUDGET], help="accuracy budgets of the 'auto' rows"
    )
    parser.add_argument(
        "--candidates",
        default=None,
        help="candidates of the 'auto' rows, e.g. 'msfp16,int12-bfp/msfp16,int12-bfp' (narrowest first, "
        "WEIGHTS/ACTIVATIONS for a pair; default: the search's)",
    )
    parser.add_argument("--model-path", default=MODEL_PATH, help="where compiled programs are kept")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--baseline-kernels",
        metavar="REF",
        help="also time the numba kernels of this git revision (e.g. main), interleaved with the current ones",
    )
    parser.add_argument(
        "--baseline-chooses",
        action="store_true",
        help="the baseline's batch of one spreads or runs on one core by measured time, as the current "
        "executor does (default: always spread, the behaviour before issue 14)",
    )
    parser.add_argument(
        "--baseline-whole-gemms",
        action="store_true",
        help="the baseline's GEMMs as before fixed tiles: one OpenBLAS call per op and batch, on "
        "OpenBLAS's threads when a batch of one spreads",
    )
    args = parser.parse_args(argv)
    baseline = load_baseline_kernels(args.baseline_kernels) if args.baseline_kernels else None
    images = photo_set()
    print(
        f"{len(images)} photos; {os.cpu_count()} cores; kernels: {os.environ.get('FPGASERVE_KERNELS', 'numba')}"
        f"; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(HEADER, flush=True)
    rows = [
        row
        for name in args.models
        for row in bench_model(
            name,
            args.formats,
            images,
            args.repeats,
            args.budgets,
            baseline,
            args.model_path,
            args.candidates,
            baseline_spread=None if args.baseline_chooses else True,
            baseline_whole_gemms=args.baseline_whole_gemms,
        )
    ]
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
