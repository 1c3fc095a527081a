"""Benchmark of weight adaptation (issue 16) on programs built by hand: EfficientNet-Lite0 with every
pointwise conv in 12-bit weights x 8-bit activations (the 0.26 ms program), plain and adapted.

Prints one row per program: top-1 agreement with the float Keras model on bench/fpga.py's 153
held-apart inputs, flips, mean margin drift (|change of float's top-1 logit margin|), modeled device
time at batch 1, weight memory and the adaptation's time. Adaptation uses the zoo's calibration photos
only (none among the 153).

    python bench/adapt.py                 # about 5 minutes on 2 cores
    python bench/adapt.py --distill       # the distillation experiment instead (bench/distill.py):
        # DISTILL_TRAIN=all|bias, DISTILL_STEPS (120), DISTILL_LR (1e-5); about 4 minutes
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fpga import MODEL_PATH, photo_set
from fpgaserve.compiler.adapt import adapt_weights
from fpgaserve.compiler.compile import compile_graph
from fpgaserve.compiler.fuse import optimize
from fpgaserve.compiler.keras_import import Graph, import_keras
from fpgaserve.compiler.permute import permute
from fpgaserve.npu import DeviceModel, EmulatedDevice, Executor, get_format
from fpgaserve.npu.formats import Precision
from fpgaserve.sdk.calibration import calibration_photos
from fpgaserve.sdk.zoo import get_zoo_model

INT12, MSFP16 = get_format("int12-bfp"), get_format("msfp16")
BIG = DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0)


def log_scores(model: Any, features: np.ndarray) -> np.ndarray:
    probs = model.classifier.predict(features, verbose=0, batch_size=64)
    return np.asarray(np.log(np.maximum(probs, 1e-30)))


def row(label: str, program: Any, model: Any, batch: np.ndarray, ref: np.ndarray, seconds: float) -> str:
    with Executor(program, device=EmulatedDevice(BIG)) as ex:
        feats = np.concatenate([ex.run(batch[i : i + 8]).outputs for i in range(0, len(batch), 8)])
        device_ms = ex.modeled_seconds(1) * 1e3
    scores, top = log_scores(model, feats), ref.argmax(1)
    ranked = np.sort(ref, axis=1)
    others = scores.copy()
    others[np.arange(len(scores)), top] = -np.inf
    margin = scores[np.arange(len(scores)), top] - others.max(1)
    drift = float(np.abs(ranked[:, -1] - ranked[:, -2] - margin).mean())
    flips = int((scores.argmax(1) != top).sum())
    return (
        f"| {label} | {100 * (1 - flips / len(top)):.1f} % | {flips} | {drift:.4f} | {device_ms:.3f} | "
        f"{program.weight_bytes / 2**20:.2f} | {seconds:.0f} |"
    )


def distill_rows(
    model: Any, graph: Graph, batch: np.ndarray, ref: np.ndarray, steps: int, lr: float, train: str
) -> None:
    """The 0.259 ms program (pairs, head_conv msfp16) distilled from the float model's logits."""
    from distill import distill

    head = {g.name: Precision(INT12, MSFP16) for g in graph.ops if g.kind in ("conv2d", "dense")}
    head["head_conv"] = Precision(MSFP16, MSFP16)
    calib_images = calibration_photos()
    calib = np.concatenate([model.preprocess(img) for img in calib_images])
    fc = model.classifier.get_layer("fc").get_weights()

    def show(label: str, g: Graph, seconds: float = 0.0) -> None:
        program = compile_graph(g, fmt=INT12, name="bench", layer_formats=head)
        print(row(label, program, model, batch, ref, seconds), flush=True)

    start = time.perf_counter()
    permuted = permute(graph, base=INT12, calibration=calib)
    show("pairs but head_conv msfp16, permute", permuted, time.perf_counter() - start)
    start = time.perf_counter()
    tuned = distill(
        graph,
        formats=head,
        base=INT12,
        images=calib_images,
        preprocess=lambda imgs: np.concatenate([model.preprocess(i) for i in imgs]),
        head=(fc[0], fc[1]),
        steps=steps,
        lr=lr,
        train=train,
    )
    tuned_s = time.perf_counter() - start
    show(f"pairs but head_conv msfp16, distill {train} ({steps} steps of 8, lr {lr:g})", tuned, tuned_s)
    start = time.perf_counter()
    both = permute(tuned, base=INT12, calibration=calib)
    show("pairs but head_conv msfp16, distill+permute", both, tuned_s + time.perf_counter() - start)


def main() -> int:
    distill_mode = "--distill" in sys.argv
    model = get_zoo_model("efficientnet-lite0", model_path=MODEL_PATH)
    graph: Graph = optimize(import_keras(model.featurizer, input_shape=model.input_shape))
    batch = np.concatenate([model.preprocess(img) for img in photo_set()])
    feats = np.concatenate(
        [model.featurizer(batch[i : i + 16], training=False).numpy() for i in range(0, 153, 16)]
    )
    ref = log_scores(model, feats)
    calib = np.concatenate([model.preprocess(img) for img in calibration_photos()])
    pairs: dict[str, Any] = {
        g.name: Precision(INT12, MSFP16) for g in graph.ops if g.kind in ("conv2d", "dense")
    }
    print(f"load average {os.getloadavg()[0]:.1f}; {len(batch)} inputs, {len(calib)} calibration images")
    print("| program | top-1 | flips | margin drift | device b1 ms | weights MiB | adapt s |")
    print("|---|---|---|---|---|---|---|")

    def show(label: str, g: Graph, formats: dict[str, Any], seconds: float = 0.0) -> None:
        program = compile_graph(g, fmt=INT12, name="bench", layer_formats=formats)
        print(row(label, program, model, batch, ref, seconds), flush=True)

    show("int12-bfp everywhere", graph, {})
    if distill_mode:
        steps = int(os.environ.get("DISTILL_STEPS", "120"))
        lr = float(os.environ.get("DISTILL_LR", "1e-5"))
        train = os.environ.get("DISTILL_TRAIN", "all")  # or "bias"
        distill_rows(model, graph, batch, ref, steps, lr, train)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        return 0
    show("pairs (every conv int12-bfp/msfp16), plain", graph, pairs)
    start = time.perf_counter()
    permuted = permute(graph, base=INT12, calibration=calib)
    permute_s = time.perf_counter() - start
    show("pairs, permute", permuted, pairs, permute_s)
    start = time.perf_counter()
    refitted = adapt_weights(graph, formats=pairs, base=INT12, calibration=calib)
    show("pairs, refit", refitted, pairs, time.perf_counter() - start)
    start = time.perf_counter()
    both = adapt_weights(permuted, formats=pairs, base=INT12, calibration=calib)
    show("pairs, permute+refit", both, pairs, permute_s + time.perf_counter() - start)
    start = time.perf_counter()
    network = adapt_weights(graph, formats=pairs, base=INT12, calibration=calib, reference="network")
    show("pairs, refit to the float network's activations", network, pairs, time.perf_counter() - start)
    show("pairs but head_conv msfp16, permute", permuted, {**pairs, "head_conv": MSFP16}, permute_s)
    show("pairs but head_conv msfp16, plain", graph, {**pairs, "head_conv": MSFP16})
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
