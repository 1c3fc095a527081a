"""Mixed precision to an accuracy budget: per matrix op, the narrowest BFP format that keeps the answers.

Role: called by ``compile_keras(..., budget=...)`` (and so by ``fpgaserve compile --accuracy-budget``
and the zoo's ``format="auto"``). It runs the float Keras model once on a calibration batch, then
compiles and runs program variants on the emulated device, and returns the cheapest program found
whose outputs stay within the budget. The method, and why it is built this way, is in
docs/numerics.md ("Mixed precision"):

1. Costs: modeled device cycles (batch 1) and packed weight bytes of every op in every candidate,
   read from the same lowering and storage code the executor uses.
2. Sensitivity: each op alone in each narrower candidate, all others in the widest (from the widest
   down, stopping at the first candidate that breaks the budget on its own).
3. Greedy, time first: the moves that save device time, ordered by feature-cosine loss per cycle
   saved; the longest prefix that keeps the budget (binary search), then each remaining move tried
   on its own. Then the same for weight memory (cosine loss per byte saved, prefix only).

Every choice is verified on the whole program; ties break by program order, so the result is
deterministic for a given calibration batch.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.keras_import import Graph
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL, DeviceModel, EmulatedDevice
from fpgaserve.npu.executor import Executor
from fpgaserve.npu.formats import FORMATS, BfpFormat
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.lowering import lower_program
from fpgaserve.npu.program import MATRIX_OPS, Program

__all__ = [
    "DEFAULT_CANDIDATES",
    "AccuracyBudget",
    "BudgetError",
    "SearchResult",
    "search_formats",
]

logger = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
Metric = Literal["top1", "cosine"]

# The presets from narrowest to widest (INT12-BFP): the widest is where the search starts.
DEFAULT_CANDIDATES: tuple[BfpFormat, ...] = tuple(sorted(FORMATS.values(), key=lambda f: f.bits_per_value))
# Near-float (one exponent per element, 15 mantissa bits): only to name the layers that limit a budget.
_NEAR_FLOAT = BfpFormat("near-float", block_size=1, exponent_bits=8, mantissa_bits=15)
_BUDGET_RE = re.compile(r"^\s*(top1|top-1|cosine|cos)\s*>=?\s*([0-9.]+)\s*(%?)\s*$", re.IGNORECASE)
_BATCH = 16  # calibration examples per executor run
# Sensitivity runs (one per op and candidate: most of the search's runs) use this many examples, the
# first of the calibration batch: they only rank and prune moves; every choice is verified on all.
SENSITIVITY_EXAMPLES = 8


@dataclass(frozen=True)
class AccuracyBudget:
    """How close to the float model the program must stay on the calibration set.

    ``top1``: the fraction of examples whose top-1 class matches float's. ``cosine``: the mean cosine
    similarity of the program's outputs with float's.
    """

    metric: Metric
    threshold: float

    def __post_init__(self) -> None:
        if self.metric not in ("top1", "cosine"):
            raise ValueError(f"budget metric must be 'top1' or 'cosine', got {self.metric!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"budget threshold must be in (0, 1], got {self.threshold}")

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        """``"top1>=99%"``, ``"top1>=0.99"``, ``"cosine>=0.999"``."""
        m = _BUDGET_RE.match(text)
        if m is None:
            raise ValueError(
                f"cannot read accuracy budget {text!r}; write e.g. 'top1>=99%' or 'cosine>=0.999'"
            )
        metric: Metric = "top1" if m.group(1).lower().startswith("top") else "cosine"
        value = float(m.group(2)) / (100.0 if m.group(3) else 1.0)
        return cls(metric, value)

    def met(self, score: _Score) -> bool:
        return score.value(self.metric) >= self.threshold

    def __str__(self) -> str:
        return f"{self.metric}>={self.threshold:g}"


class BudgetError(ValueError):
    """No choice of formats from the candidates keeps the program within the budget."""

    def __init__(self, message: str, *, limiting: tuple[str, ...], score: float) -> None:
        super().__init__(message)
        self.limiting = limiting
        self.score = score


@dataclass(frozen=True)
class _Score:
    top1: float
    cosine: float

    def value(self, metric: Metric) -> float:
        return self.top1 if metric == "top1" else self.cosine


@dataclass
class SearchResult:
    """The chosen program and how the search got there."""

    program: Program
    layer_formats: dict[str, str]
    score: float  # the budget's metric on the calibration set
    cosine: float
    evaluations: int  # whole-program runs over the calibration set
    seconds: float
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> format -> cosine alone


class _Evaluator:
    """Compiles and runs program variants on the calibration batch, scoring them against float."""

    def __init__(
        self, graph: Graph, *, reference: F32, calibration: F32, head: Callable[[F32], Any] | None,
        base: BfpFormat, name: str, metadata: dict[str, Any],
    ) -> None:  # fmt: skip
        from fpgaserve.compiler.compile import WeightCache

        self.graph = graph
        self.calibration = calibration
        self.head = head
        self.base = base
        self.name = name
        self.metadata = metadata
        self.cache: WeightCache = {}
        self.reference = reference.reshape(len(reference), -1)
        self.reference_top1 = self._classes(reference)
        self.runs = 0
        self._kernels = load_kernels()
        # Room for every candidate: the budget is about numerics, not about one board's memory.
        self._model = DeviceModel("search", 1 << 34, 6, 128, 1024, 300.0)

    def _classes(self, outputs: F32) -> npt.NDArray[np.int64]:
        scores = np.asarray(self.head(outputs) if self.head is not None else outputs)
        return np.asarray(scores.reshape(len(scores), -1).argmax(axis=1), np.int64)

    def program(self, formats: dict[str, BfpFormat]) -> Program:
        from fpgaserve.compiler.compile import compile_graph

        return compile_graph(
            self.graph, fmt=self.base, name=self.name, metadata=self.metadata,
            layer_formats={k: f for k, f in formats.items() if f != self.base}, cache=self.cache,
        )  # fmt: skip

    def op_costs(self, formats: dict[str, BfpFormat]) -> dict[str, tuple[int, int]]:
        """Per matrix op: (modeled cycles at batch 1, packed weight bytes), from the executor's code."""
        program = self.program(formats)
        steps = lower_program(program, kernels=self._kernels)
        return {
            op.name: (step.cycles(1, DEFAULT_DEVICE_MODEL), program.op_weight_bytes(op.name))
            for op, step in zip(program.ops, steps, strict=True)
            if op.kind in MATRIX_OPS
        }

    def score(self, formats: dict[str, BfpFormat], *, examples: int | None = None) -> _Score:
        """The program's agreement with float on the calibration batch (or its first ``examples``)."""
        self.runs += 1
        n = len(self.calibration) if examples is None else min(examples, len(self.calibration))
        with Executor(self.program(formats), device=EmulatedDevice(self._model)) as ex:
            out = np.concatenate(
                [ex.run(self.calibration[i : min(i + _BATCH, n)]).outputs for i in range(0, n, _BATCH)]
            )
        flat = out.reshape(len(out), -1).astype(np.float64)
        ref = self.reference[:n].astype(np.float64)
        norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(ref, axis=1)
        cos = np.where(norms > 0, (flat * ref).sum(axis=1) / np.maximum(norms, 1e-300), 0.0)
        top1 = float(np.mean(self._classes(out) == self.reference_top1[:n]))
        return _Score(top1=top1, cosine=float(cos.mean()))


def search_formats(
    graph: Graph,
    *,
    model: Any,
    budget: AccuracyBudget,
    calibration: npt.NDArray[Any],
    candidates: tuple[BfpFormat, ...] | None = None,
    head: Callable[[F32], Any] | None = None,
    name: str,
    metadata: dict[str, Any] | None = None,
) -> SearchResult:
    """Choose a format per matrix op of ``graph`` (see the module docstring); raises ``BudgetError``."""
    start = time.perf_counter()
    cands = tuple(candidates or DEFAULT_CANDIDATES)
    if not cands:
        raise ValueError("the candidate format list is empty")
    calib = np.ascontiguousarray(calibration, dtype=np.float32)
    if calib.ndim != len(graph.input_shape) + 1 or calib.shape[1:] != tuple(graph.input_shape):
        raise ValueError(
            f"calibration batch has shape {calib.shape}; the model takes (N, "
            f"{', '.join(map(str, graph.input_shape))})"
        )
    if len(calib) == 0:
        raise ValueError("the calibration set is empty")
    widest = cands[-1]
    reference = np.concatenate(
        [np.asarray(model(calib[i : i + _BATCH], training=False)) for i in range(0, len(calib), _BATCH)]
    ).astype(np.float32)
    ev = _Evaluator(
        graph, reference=reference, calibration=calib, head=head, base=widest, name=name,
        metadata=dict(metadata or {}),
    )  # fmt: skip
    layers = [g.name for g in graph.ops if g.kind in MATRIX_OPS]
    current = dict.fromkeys(layers, widest)
    base_score = ev.score(current)
    if not budget.met(base_score):
        raise _unmet(ev, budget, layers, current, base_score, widest)
    subset = SENSITIVITY_EXAMPLES
    base_subset = ev.score(current, examples=subset)

    costs = {f: ev.op_costs(dict.fromkeys(layers, f)) for f in cands}
    # 2. Sensitivity: each op alone, from the widest candidate down; a candidate that breaks the budget
    # alone is never used for that op (nor, assuming narrower is no better, anything narrower).
    sensitivity: dict[str, dict[str, float]] = {layer: {widest.name: base_subset.cosine} for layer in layers}
    allowed: dict[str, list[BfpFormat]] = {layer: [widest] for layer in layers}
    for layer in layers:
        for fmt in reversed(cands[:-1]):
            if costs[fmt][layer] >= costs[allowed[layer][-1]][layer]:
                continue  # saves nothing over a wider allowed format: not worth a run
            s = ev.score({**current, layer: fmt}, examples=subset)
            sensitivity[layer][fmt.name] = s.cosine
            if not budget.met(s):
                break
            allowed[layer].append(fmt)
        logger.debug("precision search: %s %s", layer, sensitivity[layer])
    logger.info("precision search: sensitivity of %d ops in %d runs", len(layers), ev.runs)

    def loss(layer: str, fmt: BfpFormat) -> float:
        return max(base_subset.cosine - sensitivity[layer][fmt.name], 0.0) + 1e-9

    # 3a. Device time: per op the least lossy allowed format among its fastest ones.
    time_moves: list[tuple[float, int, str, BfpFormat]] = []
    for i, layer in enumerate(layers):
        fastest = min(costs[f][layer][0] for f in allowed[layer])
        saved = costs[widest][layer][0] - fastest
        if saved > 0:
            best = min(
                (f for f in allowed[layer] if costs[f][layer][0] == fastest), key=lambda f: loss(layer, f)
            )
            time_moves.append((loss(layer, best) / saved, i, layer, best))
    time_moves.sort(key=lambda m: (m[0], m[1]))
    current = _apply_prefix(ev, budget, current, [(m[2], m[3]) for m in time_moves], costs)
    for _, _, layer, fmt in time_moves:  # fill: what the prefix left out, one at a time
        if current[layer] == fmt:
            continue
        trial = {**current, layer: fmt}
        if budget.met(ev.score(trial)):
            current = trial
    # 3b. Weight memory: narrower formats that cost no device time, by loss per byte saved.
    mem_moves: list[tuple[float, int, str, BfpFormat]] = []
    for i, layer in enumerate(layers):
        cyc, nbytes = costs[current[layer]][layer]
        for f in allowed[layer]:
            saved = nbytes - costs[f][layer][1]
            if costs[f][layer][0] <= cyc and saved > 0:
                mem_moves.append((loss(layer, f) / saved, i, layer, f))
    mem_moves.sort(key=lambda m: (m[0], m[1], m[3].bits_per_value))
    current = _apply_prefix(ev, budget, current, [(m[2], m[3]) for m in mem_moves], costs)

    final = ev.score(current)
    program = ev.program(current)
    seconds = time.perf_counter() - start
    program.metadata["precision"] = {
        "budget": str(budget),
        "calibrationExamples": len(calib),
        "top1": final.top1,
        "cosine": final.cosine,
        "candidates": [f.name for f in cands],
        "evaluations": ev.runs,
        "searchSeconds": round(seconds, 1),
    }
    logger.info(
        "precision search: %s met (top1 %.4f, cosine %.6f) after %d runs in %.0f s",
        budget, final.top1, final.cosine, ev.runs, seconds,
    )  # fmt: skip
    return SearchResult(
        program=program,
        layer_formats={k: f.name for k, f in current.items()},
        score=final.value(budget.metric),
        cosine=final.cosine,
        evaluations=ev.runs,
        seconds=seconds,
        sensitivity=sensitivity,
    )


def _apply_prefix(
    ev: _Evaluator,
    budget: AccuracyBudget,
    current: dict[str, BfpFormat],
    moves: list[tuple[str, BfpFormat]],
    costs: dict[BfpFormat, dict[str, tuple[int, int]]],
) -> dict[str, BfpFormat]:
    """``current`` with the longest prefix of ``moves`` that keeps the budget (binary search: the loss
    grows with the prefix, near enough). An op moved twice takes its cheaper format."""

    def applied(k: int) -> dict[str, BfpFormat]:
        out = dict(current)
        for layer, fmt in moves[:k]:
            if costs[fmt][layer] < costs[out[layer]][layer]:
                out[layer] = fmt
        return out

    lo, hi = 0, len(moves)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if budget.met(ev.score(applied(mid))):
            lo = mid
        else:
            hi = mid - 1
    return applied(lo)


def _unmet(
    ev: _Evaluator,
    budget: AccuracyBudget,
    layers: list[str],
    current: dict[str, BfpFormat],
    full: _Score,
    widest: BfpFormat,
) -> BudgetError:
    """The error for a budget the widest candidate misses, naming the ops that limit it: those whose
    lift alone to near-float precision brings the score (then the cosine) up the most."""
    score = ev.score(current, examples=SENSITIVITY_EXAMPLES)
    gains = []
    for i, layer in enumerate(layers):
        s = ev.score({**current, layer: _NEAR_FLOAT}, examples=SENSITIVITY_EXAMPLES)
        gains.append(
            (-(s.value(budget.metric) - score.value(budget.metric)), -(s.cosine - score.cosine), i, layer)
        )
    limiting = tuple(g[3] for g in sorted(gains)[:5])
    return BudgetError(
        f"accuracy budget {budget} cannot be met: with {widest.name} (the widest candidate) everywhere the "
        f"calibration set scores {budget.metric} {full.value(budget.metric):.4f}; the layers that limit it "
        f"most (each alone at near-float precision helps most): {', '.join(limiting)}",
        limiting=limiting,
        score=full.value(budget.metric),
    )
