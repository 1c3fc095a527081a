"""Distillation with fake quantization (issue 16, candidate (b)): fine-tune a compiler graph's weights
so that the network in its program's formats reproduces the ORIGINAL float model's logits.

Role: an experiment for ``bench/adapt.py --distill`` (not wired into the compiler: measured, it does
not reach the target; docs/numerics.md, "Weight adaptation"). The compiler's float op graph
(``fpgaserve.compiler.keras_import.Graph``, BatchNorm already folded) is run in TensorFlow with every
matrix op's input activations and weights rounded in its BFP format (blocks of 16 along the channels,
the emulator's rule: shared exponent ``floor(log2(max |x|))``, quantum ``2**(e - (M - 1))``, ties
away from zero, saturating), through a straight-through estimator. The student starts from the
trained weights; the teacher is the same graph in float with the trained weights; the loss is the
mean squared difference of the logits (the zoo's fixed dense head) on augmented calibration images
(random crops, flips, brightness and colour jitter; never the benchmark photos). Seeded and with
``tf.config.experimental.enable_op_determinism()``: the same call gives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from fpgaserve.compiler.keras_import import Graph
from fpgaserve.npu.formats import BfpFormat, Precision

__all__ = ["augment", "distill", "fake_quant", "graph_forward"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
MATRIX_KINDS = ("conv2d", "dense", "depthwise_conv2d")


def fake_quant(x: tf.Tensor, fmt: BfpFormat) -> tf.Tensor:
    """``x`` rounded to ``fmt`` in blocks along its last axis; the gradient passes straight through."""
    c = int(x.shape[-1])
    n = fmt.block_size
    pad = (-c) % n
    xp = tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, pad]]) if pad else x
    blocks = tf.reshape(xp, tf.concat([tf.shape(xp)[:-1], [(c + pad) // n, n]], 0))
    top = tf.reduce_max(tf.abs(blocks), axis=-1, keepdims=True)
    e = tf.floor(tf.math.log(tf.maximum(top, 1e-30)) / np.log(2.0))
    e = tf.clip_by_value(e, float(fmt.emin), float(fmt.emax))
    q = tf.pow(2.0, e - float(fmt.mantissa_bits - 1))
    m = tf.sign(blocks) * tf.floor(tf.abs(blocks) / q + 0.5)
    m = tf.clip_by_value(m, -float(fmt.max_mantissa), float(fmt.max_mantissa))
    y = tf.reshape(m * q, tf.shape(xp))[..., :c]
    return x + tf.stop_gradient(y - x)


def _act(x: tf.Tensor, name: str) -> tf.Tensor:
    if name == "relu6":
        return tf.clip_by_value(x, 0.0, 6.0)
    if name == "relu":
        return tf.nn.relu(x)
    if name == "linear":
        return x
    raise ValueError(f"activation {name!r} is not in the distillation's forward pass")


def graph_forward(
    graph: Graph,
    params: Mapping[str, tuple[tf.Variable | tf.Tensor, tf.Variable | tf.Tensor]],
    *,
    formats: Mapping[str, Precision] | None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """The graph as a TF function of its input batch; ``formats`` (per op) fake-quantizes the matrix
    ops' weights and input activations, None runs in float."""

    def run(x: tf.Tensor) -> tf.Tensor:
        env: dict[str, tf.Tensor] = {graph.input_name: x}
        for g in graph.ops:
            a = env[g.inputs[0]]
            act = str(g.attrs.get("activation", "linear"))
            if g.kind in MATRIX_KINDS:
                w, b = params[g.name]
                prec = formats.get(g.name) if formats is not None else None
                if prec is not None:
                    a = fake_quant(a, prec.activations)
                    if g.kind == "conv2d":  # blocks along cin: move it last and back
                        w = tf.transpose(
                            fake_quant(tf.transpose(w, [0, 1, 3, 2]), prec.weights), [0, 1, 3, 2]
                        )
                    elif g.kind == "depthwise_conv2d":  # blocks along the taps of each channel
                        kh, kw, ch = (int(s) for s in w.shape)
                        flat = tf.transpose(tf.reshape(w, [kh * kw, ch]))
                        w = tf.reshape(tf.transpose(fake_quant(flat, prec.weights)), [kh, kw, ch])
                    else:
                        w = tf.transpose(fake_quant(tf.transpose(w), prec.weights))
                if g.kind == "dense":
                    y = tf.matmul(tf.reshape(a, [tf.shape(a)[0], -1]), w)
                else:
                    t, bo, left, r = (int(p) for p in g.attrs.get("pads", (0, 0, 0, 0)))
                    s = int(g.attrs.get("strides", (1, 1))[0])
                    ap = tf.pad(a, [[0, 0], [t, bo], [left, r], [0, 0]]) if any((t, bo, left, r)) else a
                    if g.kind == "conv2d":
                        y = tf.nn.conv2d(ap, w, strides=s, padding="VALID")
                    else:
                        y = tf.nn.depthwise_conv2d(ap, w[..., None], strides=[1, s, s, 1], padding="VALID")
                env[g.output] = _act(y + b, act)
            elif g.kind == "add":
                env[g.output] = _act(tf.add_n([env[i] for i in g.inputs]), act)
            elif g.kind == "global_avg_pool":
                env[g.output] = tf.reduce_mean(a, axis=[1, 2])
            else:
                raise ValueError(f"op {g.name!r} ({g.kind}) is not in the distillation's forward pass")
        return env[graph.output_name]

    return run


def augment(images: Sequence[U8], rng: np.random.Generator, *, count: int) -> list[U8]:
    """``count`` random views of the images: a crop of 50-100 % of the area (aspect 3/4-4/3), a
    horizontal flip half the time, brightness x0.8-1.2 and each colour x0.9-1.1."""
    out: list[U8] = []
    for _ in range(count):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        area = rng.uniform(0.5, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
        cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        view = img[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
        if rng.random() < 0.5:
            view = view[:, ::-1]
        scaled = view * rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3)
        out.append(np.clip(scaled, 0, 255).astype(np.uint8))
    return out


def distill(
    graph: Graph,
    *,
    formats: Mapping[str, BfpFormat | Precision],
    base: BfpFormat,
    images: Sequence[U8],
    preprocess: Callable[[list[U8]], F32],
    head: tuple[F32, F32],
    steps: int = 200,
    batch: int = 8,
    lr: float = 1e-5,
    train: str = "all",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Graph:
    """``graph`` with its matrix ops' weights and biases (``train="all"``) or biases only
    (``"bias"``) fine-tuned for ``formats`` (others ``base``) to the float graph's logits through
    the dense ``head`` (weight, bias), on augmented ``images``. Deterministic for a given seed."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(seed)
    layers = [g for g in graph.ops if g.kind in MATRIX_KINDS]
    precisions = {g.name: Precision.of(formats.get(g.name, base)) for g in layers}
    zeros = {g.name: np.zeros(g.weight.shape[-1], np.float32) for g in layers if g.weight is not None}
    fixed = {
        g.name: (tf.constant(g.weight), tf.constant(g.bias if g.bias is not None else zeros[g.name]))
        for g in layers
        if g.weight is not None
    }
    student: dict[str, tuple[Any, Any]] = {}
    trained: list[tf.Variable] = []
    for g in layers:
        assert g.weight is not None
        bias = zeros[g.name] if g.bias is None else g.bias
        wv = tf.Variable(g.weight, trainable=train == "all", name=f"{g.name}_w")
        bv = tf.Variable(bias, name=f"{g.name}_b")
        student[g.name] = (wv, bv)
        trained += [wv, bv] if train == "all" else [bv]
    hw, hb = tf.constant(head[0]), tf.constant(head[1])
    teacher_fn = graph_forward(graph, fixed, formats=None)
    student_fn = graph_forward(graph, student, formats=precisions)
    opt = tf.keras.optimizers.Adam(learning_rate=lr)

    @tf.function  # type: ignore[untyped-decorator]  # TensorFlow is untyped
    def step(x: tf.Tensor) -> tf.Tensor:
        target = tf.stop_gradient(tf.matmul(teacher_fn(x), hw) + hb)
        with tf.GradientTape() as tape:
            logits = tf.matmul(student_fn(x), hw) + hb
            loss = tf.reduce_mean(tf.square(logits - target))
        opt.apply_gradients(zip(tape.gradient(loss, trained), trained, strict=True))
        return loss

    losses: list[float] = []
    for i in range(steps):
        x = tf.constant(preprocess(augment(images, rng, count=batch)))
        losses.append(float(step(x)))
        if (i + 1) % 25 == 0:
            log(f"  distill step {i + 1}/{steps}: logit mse {np.mean(losses[-25:]):.4f}")
    new = {
        name: replace(
            next(g for g in graph.ops if g.name == name),
            weight=np.asarray(wv.numpy(), np.float32),
            bias=np.asarray(bv.numpy(), np.float32),
        )
        for name, (wv, bv) in student.items()
    }
    return replace(graph, ops=[new.get(g.name, g) for g in graph.ops])
