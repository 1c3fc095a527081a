"""Mixed precision to an accuracy budget: per matrix op, the narrowest BFP format that keeps the answers.

Role: called by ``compile_keras(..., budget=...)`` (and so by ``fpgaserve compile --accuracy-budget``
and the zoo's ``format="auto"``). It runs the float Keras model once on a calibration batch, then
compiles and runs program variants on the emulated device's kernels, and returns the cheapest program
found whose outputs stay within the budget (``fpgaserve.compiler.budget``). The method, and why it is
built this way, is in docs/numerics.md ("Mixed precision"):

1. Costs: modeled device cycles (batch 1) and packed weight bytes of every op in every candidate,
   read from the same lowering and storage code the executor uses.
2. Sensitivity: each op alone in each narrower candidate, all others in the widest (from the widest
   down; a candidate that breaks the budget on its own rules out every candidate no wider in either
   operand). A candidate is a format for weights and activations alike, or a weights/activations pair
   (``int12-bfp/msfp16``: two matrix passes instead of four).
3. Greedy, time first: the moves that save device time, ordered by loss per cycle saved (margin
   drift for decision budgets, cosine loss for the cosine budget); the longest prefix that keeps the
   budget (binary search), then each remaining move tried on its own. Then the same for weight
   memory (loss per byte saved, prefix only).

Runs are incremental: a variant restarts from the first op it changes (the producer of that op's
input, which may quantize for it), on the kept activations of a program it differs from only there
on. Every choice is verified on the whole calibration set; ties break by program order, so the
result is deterministic for a given calibration batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.bias_correction import NEAR_FLOAT
from fpgaserve.compiler.budget import AccuracyBudget, Reference, Score
from fpgaserve.compiler.evaluator import Evaluator, Formats, RunState
from fpgaserve.compiler.keras_import import Graph
from fpgaserve.npu.formats import FORMATS, BfpFormat, Precision
from fpgaserve.npu.program import MATRIX_OPS, Program

__all__ = [
    "DEFAULT_CANDIDATES",
    "SENSITIVITY_EXAMPLES",
    "AccuracyBudget",
    "BudgetError",
    "SearchResult",
    "search_formats",
]

logger = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]

# The presets from narrowest to widest (INT12-BFP), the widest where the search starts, and just below
# it the two pairs of one 12-bit and one 8-bit operand: on 8-bit lanes two passes instead of four. On
# EfficientNet-Lite0 the weights lose more than the activations (every pointwise op at
# int12-bfp/msfp16: 97.4 % top-1 agreement; at msfp16/int12-bfp: 91.5 %), but which operand a layer
# needs varies, and msfp16 weights also save memory. int12-bfp against int7-bfp activations is left
# out: the same passes and memory as against msfp16's, with coarser activations.
DEFAULT_CANDIDATES: tuple[Precision, ...] = (
    *(
        Precision.of(f)
        for f in sorted(FORMATS.values(), key=lambda f: f.bits_per_value)
        if f.name != "int12-bfp"
    ),
    Precision(FORMATS["msfp16"], FORMATS["int12-bfp"]),
    Precision(FORMATS["int12-bfp"], FORMATS["msfp16"]),
    Precision.of(FORMATS["int12-bfp"]),
)
# Near-float (one exponent per element, 15 mantissa bits): to name the layers that limit a budget.
_NEAR_FLOAT = NEAR_FLOAT
# Sensitivity runs (one per op and candidate: most of the search's runs) use this many examples, the
# first of the calibration batch: they only rank and prune moves; every choice is verified on all.
SENSITIVITY_EXAMPLES = 32
# Kept activations (the sensitivity subset's, for incremental runs) stay below this: 32 examples of
# EfficientNet-Lite0 take 0.85 GiB, so ResNet-50 (62 MiB an example) gets 17. Runs on the whole
# calibration set keep nothing and restart from the input.
KEEP_BYTES = 1 << 30
# Top-1 agreement where float is decisive (its top score ahead by more than this) is also reported.
_DECISIVE = 0.1


class BudgetError(ValueError):
    """No choice of formats from the candidates keeps the program within the budget."""

    def __init__(self, message: str, *, limiting: tuple[str, ...], score: float) -> None:
        super().__init__(message)
        self.limiting = limiting
        self.score = score


@dataclass
class SearchResult:
    """The chosen program and how the search got there."""

    program: Program
    layer_formats: dict[str, str]
    score: float  # the budget's metric on the calibration set
    cosine: float
    evaluations: int  # program runs (whole or incremental; on the whole set or the sensitivity subset)
    seconds: float
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> format -> loss alone
    metrics: dict[str, float] = field(default_factory=dict)  # every metric of the final program


def search_formats(
    graph: Graph,
    *,
    model: Any,
    budget: AccuracyBudget,
    calibration: npt.NDArray[Any],
    candidates: tuple[BfpFormat | Precision, ...] | None = None,
    head: Callable[[F32], Any] | None = None,
    name: str,
    metadata: dict[str, Any] | None = None,
    sensitivity_examples: int = SENSITIVITY_EXAMPLES,
    bias_correction: bool = False,
) -> SearchResult:
    """Choose a format per matrix op of ``graph`` (see the module docstring); raises ``BudgetError``.
    ``bias_correction``: every variant is scored with its biases corrected
    (``fpgaserve.compiler.bias_correction``), and the program carries the corrected biases."""
    start = time.perf_counter()
    cands = tuple(Precision.of(c) for c in (candidates or DEFAULT_CANDIDATES))
    if not cands:
        raise ValueError("the candidate format list is empty")
    if len(set(cands)) != len(cands):
        raise ValueError(f"the candidate list names a format twice: {', '.join(c.name for c in cands)}")
    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    if calib.ndim != len(graph.input_shape) + 1 or calib.shape[1:] != tuple(graph.input_shape):
        raise ValueError(
            f"calibration batch has shape {calib.shape}; the model takes (N, "
            f"{', '.join(map(str, graph.input_shape))})"
        )
    if len(calib) == 0:
        raise ValueError("the calibration set is empty")
    widest = cands[-1]
    float_out = np.concatenate(
        [np.asarray(model(calib[i : i + 16], training=False)) for i in range(0, len(calib), 16)]
    ).astype(np.float32)
    # The sensitivity subset is the first examples: spread it over the whole set (the calibration
    # photos come in groups of variants), by taking every k-th example first.
    per_example = sum(int(np.prod(graph.shapes[g.output])) * 4 for g in graph.ops)
    n_sub = max(1, min(sensitivity_examples, len(calib), KEEP_BYTES // max(per_example, 1)))
    stride = -(-len(calib) // n_sub)
    order = np.argsort(np.arange(len(calib)) % stride, kind="stable")
    calib, float_out = calib[order], float_out[order]
    margins = tuple(sorted({_DECISIVE, budget.margin} - {0.0}))
    reference = Reference(float_out, head=head, margins=margins)
    ev = Evaluator(
        graph, reference=reference, calibration=calib, base=widest.weights, name=name,
        metadata=dict(metadata or {}), bias_correction=bias_correction,
    )  # fmt: skip
    try:
        final, sensitivity = _search(ev, budget, cands, n_all=len(calib), n_sub=n_sub)
        current = final.formats
    finally:
        ev.close()
    program = ev.program(current, final.biases or None)
    seconds = time.perf_counter() - start
    metrics = {
        "top1": final.score.top1,
        "expectedTop1": final.score.expected_top1,
        "cosine": final.score.cosine,
        "marginDrift": final.score.drift,
        **{f"top1@{m:g}": v for m, v in final.score.decisive_top1.items()},
    }
    program.metadata["precision"] = {
        "budget": str(budget),
        "calibrationExamples": len(calib),
        **{k: round(v, 6) for k, v in metrics.items()},
        "candidates": [f.name for f in cands],
        "evaluations": ev.runs,
        "searchSeconds": round(seconds, 1),
    }
    if bias_correction:
        program.metadata["biasCorrection"] = {"calibrationExamples": len(calib)}
    logger.info(
        "precision search: %s met (%s) after %d runs in %.0f s",
        budget, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), ev.runs, seconds,
    )  # fmt: skip
    return SearchResult(
        program=program,
        layer_formats={k: f.name for k, f in current.items()},
        score=final.score.value(budget),
        cosine=final.score.cosine,
        evaluations=ev.runs,
        seconds=seconds,
        sensitivity=sensitivity,
        metrics=metrics,
    )


def _search(
    ev: Evaluator, budget: AccuracyBudget, cands: tuple[Precision, ...], *, n_all: int, n_sub: int
) -> tuple[RunState, dict[str, dict[str, float]]]:
    widest = cands[-1]
    layers = [g.name for g in ev.graph.ops if g.kind in MATRIX_OPS]
    base_all = ev.run(dict.fromkeys(layers, widest), n=n_all)
    if not budget.met(base_all.score):
        raise _unmet(ev, budget, layers, base_all.formats, base_all.score, widest, n_sub)
    base_sub = ev.run(base_all.formats, n=n_sub, keep=True)
    costs = {f: ev.op_costs(dict.fromkeys(layers, f)) for f in cands}

    # 2. Sensitivity: each op alone, from the widest candidate down; a candidate that breaks the budget
    # alone is never used for that op (nor, assuming narrower is no better, anything no wider in both
    # operands: with one format per candidate, everything after it in the list).
    sensitivity: dict[str, dict[str, float]] = {layer: {widest.name: 0.0} for layer in layers}
    # What each candidate alone costs in the budget's own metric on the subset (for the early exit).
    cost_alone: dict[tuple[str, str], float] = {}
    allowed: dict[str, list[Precision]] = {layer: [widest] for layer in layers}
    for layer in layers:
        broken: list[Precision] = []
        for fmt in reversed(cands[:-1]):
            if any(fmt.at_most(b) for b in broken):
                continue  # no wider than one that broke the budget alone
            if costs[fmt][layer] >= costs[allowed[layer][-1]][layer]:
                continue  # saves nothing over a wider allowed format: not worth a run
            s = ev.run({**base_sub.formats, layer: fmt}, n=n_sub, since=base_sub).score
            sensitivity[layer][fmt.name] = s.loss(base_sub.score, budget)
            cost_alone[layer, fmt.name] = base_sub.score.value(budget) - s.value(budget)
            # Breaks the budget alone: its loss on the subset, applied to the whole set's baseline.
            if (
                base_all.score.value(budget) - base_sub.score.value(budget) + s.value(budget)
                < budget.threshold
            ):
                broken.append(fmt)
                continue
            allowed[layer].append(fmt)
        logger.debug("precision search: %s %s", layer, sensitivity[layer])
    logger.info("precision search: sensitivity of %d ops in %d runs", len(layers), ev.runs)

    def loss(layer: str, fmt: Precision) -> float:
        return sensitivity[layer][fmt.name] + 1e-9

    # 3a. Device time: per op and level of device time below the widest's (with weight/activation pairs
    # an op may have two: 12-bit weights against 8-bit activations, then 8 bits for both), the least
    # lossy allowed format of that level; each level a move, ordered by its extra loss per cycle saved
    # over the level above (never before it), so that an op whose fastest level is rejected can still
    # take the one between.
    time_moves: list[tuple[float, int, int, str, Precision]] = []
    for i, layer in enumerate(layers):
        prev_cycles, prev_loss, prev_ratio = costs[widest][layer][0], 0.0, 0.0
        levels = sorted({costs[f][layer][0] for f in allowed[layer]} - {prev_cycles}, reverse=True)
        for level, cycles in enumerate(c for c in levels if c < prev_cycles):
            best = min(
                (f for f in allowed[layer] if costs[f][layer][0] == cycles), key=lambda f: loss(layer, f)
            )
            ratio = max((loss(layer, best) - prev_loss) / (prev_cycles - cycles), prev_ratio)
            time_moves.append((ratio, i, level, layer, best))
            prev_cycles, prev_loss, prev_ratio = cycles, loss(layer, best), ratio
    time_moves.sort(key=lambda m: (m[0], m[1], m[2]))
    state = _apply_prefix(ev, budget, base_all, [(m[3], m[4]) for m in time_moves], costs, n=n_all)
    for *_, layer, fmt in time_moves:  # fill: what the prefix left out, one at a time
        current = state.formats[layer]
        if costs[fmt][layer] >= costs[current][layer]:
            continue  # taken, or a faster level of this op already is
        # Early exit: a move that alone cost more than the slack left is not run (additive estimate).
        extra = cost_alone.get((layer, fmt.name), 0.0) - cost_alone.get((layer, current.name), 0.0)
        if extra > state.score.value(budget) - budget.threshold:
            continue
        trial = ev.run({**state.formats, layer: fmt}, n=n_all)
        if budget.met(trial.score):
            state = trial
    # 3b. Weight memory: narrower formats that cost no device time, by loss per byte saved.
    mem_moves: list[tuple[float, int, str, Precision]] = []
    for i, layer in enumerate(layers):
        cyc, nbytes = costs[state.formats[layer]][layer]
        for f in allowed[layer]:
            saved = nbytes - costs[f][layer][1]
            if costs[f][layer][0] <= cyc and saved > 0:
                mem_moves.append((loss(layer, f) / saved, i, layer, f))
    mem_moves.sort(key=lambda m: (m[0], m[1], m[3].weights.bits_per_value, m[3].activations.bits_per_value))
    state = _apply_prefix(ev, budget, state, [(m[2], m[3]) for m in mem_moves], costs, n=n_all)
    return state, sensitivity


def _apply_prefix(
    ev: Evaluator,
    budget: AccuracyBudget,
    base: RunState,
    moves: list[tuple[str, Precision]],
    costs: dict[Precision, dict[str, tuple[int, int]]],
    *,
    n: int,
) -> RunState:
    """``base`` with the longest prefix of ``moves`` that keeps the budget (binary search: the loss
    grows with the prefix, near enough). An op moved twice takes its cheaper format."""

    def applied(k: int) -> Formats:
        out = dict(base.formats)
        for layer, fmt in moves[:k]:
            if costs[fmt][layer] < costs[out[layer]][layer]:
                out[layer] = fmt
        return out

    lo, hi, best = 0, len(moves), base
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = ev.run(applied(mid), n=n)
        if budget.met(trial.score):
            lo, best = mid, trial
        else:
            hi = mid - 1
    return best


def _unmet(
    ev: Evaluator,
    budget: AccuracyBudget,
    layers: list[str],
    current: Formats,
    full: Score,
    widest: Precision,
    n_sub: int,
) -> BudgetError:
    """The error for a budget the widest candidate misses, naming the ops that limit it: those whose
    lift alone to near-float precision brings the score (then the cosine) up the most."""
    base = ev.run(current, n=n_sub, keep=True)
    gains = []
    for i, layer in enumerate(layers):
        s = ev.run({**current, layer: _NEAR_FLOAT}, n=n_sub, since=base).score
        gains.append(
            (-(s.value(budget) - base.score.value(budget)), -(s.cosine - base.score.cosine), i, layer)
        )
    limiting = tuple(g[3] for g in sorted(gains)[:5])
    return BudgetError(
        f"accuracy budget {budget} cannot be met: with {widest.name} (the widest candidate) everywhere the "
        f"calibration set scores {budget.metric} {full.value(budget):.4f}; the layers that limit it "
        f"most (each alone at near-float precision helps most): {', '.join(limiting)}",
        limiting=limiting,
        score=full.value(budget),
    )
