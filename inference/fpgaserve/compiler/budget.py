"""Accuracy budgets of the precision search, and how a program's outputs are scored against float.

Role: used by ``fpgaserve.compiler.precision`` (the search), the zoo and the command line (which
parse and validate budgets). A budget names one metric of a program's agreement with the float model
on a calibration set and a threshold; ``Reference`` holds what float did on that set, and
``Reference.score(outputs)`` measures every metric of one program run at once. The metrics, and why
there are several, are in docs/numerics.md ("Mixed precision"):

- ``top1``: the fraction of examples whose top-1 class matches float's; with ``@M`` (``top1@0.1``)
  only the examples where float's top-1 score beats its second by more than ``M`` count.
- ``expected-top1``: the agreement expected on new inputs like the calibration set, estimated from
  every pair (margin lost by one example, float margin of another); smooth where a count over a few
  dozen examples moves in steps and is dominated by near-ties.
- ``cosine``: the mean cosine similarity of the outputs with float's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["AccuracyBudget", "Metric", "Reference", "Score"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Metric = Literal["top1", "expected-top1", "cosine"]
_METRICS: dict[str, Metric] = {
    "top1": "top1", "top-1": "top1", "expected-top1": "expected-top1", "expected-top-1": "expected-top1",
    "etop1": "expected-top1", "cosine": "cosine", "cos": "cosine",
}  # fmt: skip
_BUDGET_RE = re.compile(r"^\s*([a-z0-9-]+?)\s*(?:@\s*([0-9.]+))?\s*>=?\s*([0-9.]+)\s*(%?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AccuracyBudget:
    """How close to the float model the program must stay on the calibration set.

    ``metric`` and ``threshold`` (a fraction, or a cosine); ``margin``: for ``top1``, count only the
    examples whose float top-1 class score beats the second by more than this (0: all of them).
    """

    metric: Metric
    threshold: float
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in ("top1", "expected-top1", "cosine"):
            raise ValueError(
                f"budget metric must be 'top1', 'expected-top1' or 'cosine', got {self.metric!r}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"budget threshold must be in (0, 1], got {self.threshold}")
        if self.margin < 0.0 or (self.margin and self.metric != "top1"):
            raise ValueError(f"a budget margin goes with top1 only and is >= 0, got {self}")

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        """``"top1>=99%"``, ``"top1@0.1>=99%"``, ``"expected-top1>=99%"``, ``"cosine>=0.999"``."""
        m = _BUDGET_RE.match(text)
        metric = _METRICS.get(m.group(1).lower()) if m else None
        if m is None or metric is None:
            raise ValueError(
                f"cannot read accuracy budget {text!r}; write e.g. 'top1>=99%', 'top1@0.1>=99%', "
                "'expected-top1>=99%' or 'cosine>=0.999'"
            )
        value = float(m.group(3)) / (100.0 if m.group(4) else 1.0)
        return cls(metric, value, float(m.group(2) or 0.0))

    @property
    def decides(self) -> bool:
        """Whether the budget is about the classifier's decision (else about the features)."""
        return self.metric != "cosine"

    def met(self, score: Score) -> bool:
        return score.value(self) >= self.threshold

    def __str__(self) -> str:
        margin = f"@{self.margin:g}" if self.margin else ""
        return f"{self.metric}{margin}>={self.threshold:g}"


@dataclass(frozen=True)
class Score:
    """One program run's agreement with float on (part of) the calibration set."""

    cosine: float
    top1: float
    expected_top1: float
    drift: float  # mean margin lost, in log-score units: what the search ranks decision moves by
    decisive_top1: dict[float, float]  # margin -> top-1 agreement where float's margin exceeds it

    def value(self, budget: AccuracyBudget) -> float:
        if budget.metric == "cosine":
            return self.cosine
        if budget.metric == "expected-top1":
            return self.expected_top1
        return self.decisive_top1.get(budget.margin, self.top1) if budget.margin else self.top1

    def loss(self, base: Score, budget: AccuracyBudget) -> float:
        """How much worse than ``base`` this is, on a continuous scale that ranks moves: the margin
        drift for decision budgets (a count of flips moves in steps), the cosine loss otherwise."""
        if budget.decides:
            return max(self.drift - base.drift, 0.0)
        return max(base.cosine - self.cosine, 0.0)


def _log_scores(scores: F64) -> F64:
    """Class scores on a log scale when they are probabilities (rows >= 0 summing to 1): margins and
    their drift are then logit differences, comparable between confident and hesitant inputs."""
    if scores.size and scores.min() >= 0.0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return np.log(np.maximum(scores, 1e-30))
    return scores


class Reference:
    """What the float model did on the calibration set, and how a program's outputs compare."""

    def __init__(
        self, outputs: F32, *, head: Callable[[F32], Any] | None, margins: tuple[float, ...] = ()
    ) -> None:
        self.head = head
        self.flat = outputs.reshape(len(outputs), -1).astype(np.float64)
        scores = self.class_scores(outputs)
        self.top1 = scores.argmax(axis=1)
        ranked = np.sort(scores, axis=1)
        self.score_gap = (
            ranked[:, -1] - ranked[:, -2] if scores.shape[1] > 1 else np.full(len(scores), np.inf)
        )
        logs = np.sort(_log_scores(scores), axis=1)
        self.margin = logs[:, -1] - logs[:, -2] if scores.shape[1] > 1 else np.full(len(scores), np.inf)
        self.margins = margins

    def class_scores(self, outputs: F32) -> F64:
        scores = np.asarray(self.head(outputs) if self.head is not None else outputs, np.float64)
        return scores.reshape(len(scores), -1)

    def score(self, outputs: F32) -> Score:
        """Every metric of one run whose outputs are for the first ``len(outputs)`` examples."""
        n = len(outputs)
        flat = outputs.reshape(n, -1).astype(np.float64)
        ref = self.flat[:n]
        norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(ref, axis=1)
        cos = np.where(norms > 0, (flat * ref).sum(axis=1) / np.maximum(norms, 1e-300), 0.0)
        scores = self.class_scores(outputs)
        agree = scores.argmax(axis=1) == self.top1[:n]
        if scores.shape[1] > 1:
            logs = _log_scores(scores)
            rows = np.arange(n)
            own = logs[rows, self.top1[:n]]
            others = logs.copy()
            others[rows, self.top1[:n]] = -np.inf
            drift = self.margin[:n] - (own - others.max(axis=1))  # margin lost; > margin: a flip
        else:
            drift = np.zeros(n)
        # Expected agreement: example i's drift against example j's margin, for every pair (i, j).
        margin = np.sort(self.margin[:n])
        flips = np.searchsorted(margin, drift, side="left").sum() / float(n * n)
        decisive = {
            m: float(agree[self.score_gap[:n] > m].mean()) if (self.score_gap[:n] > m).any() else 1.0
            for m in self.margins
        }
        return Score(
            cosine=float(cos.mean()),
            top1=float(agree.mean()),
            expected_top1=float(1.0 - flips),
            drift=float(np.abs(drift).mean()),
            decisive_top1=decisive,
        )
