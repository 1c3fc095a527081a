"""Accuracy budgets: parsing, and every metric of a run scored against float by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaserve.compiler.budget import AccuracyBudget, Reference


@pytest.mark.parametrize(
    ("text", "metric", "threshold", "margin"),
    [
        ("top1>=99%", "top1", 0.99, 0.0),
        ("top-1 >= 0.95", "top1", 0.95, 0.0),
        ("top1@0.1>=99%", "top1", 0.99, 0.1),
        ("expected-top1>=98.5%", "expected-top1", 0.985, 0.0),
        ("etop1>=0.97", "expected-top1", 0.97, 0.0),
        ("cosine>=0.999", "cosine", 0.999, 0.0),
    ],
)
def test_budgets_parse_and_print_back(text: str, metric: str, threshold: float, margin: float) -> None:
    budget = AccuracyBudget.parse(text)
    assert (budget.metric, budget.threshold, budget.margin) == (metric, pytest.approx(threshold), margin)
    assert AccuracyBudget.parse(str(budget)) == budget  # the zoo keys its program files by str()


@pytest.mark.parametrize(
    "text", ["top1", "accuracy>=0.9", "cosine>=1.5", "top1>=0%", "cosine@0.1>=0.9", "expected-top1@0.2>=0.9"]
)
def test_bad_budgets_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="budget"):
        AccuracyBudget.parse(text)


def probabilities(logits: list[list[float]]) -> np.ndarray:
    z = np.exp(np.asarray(logits, np.float64))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def test_decision_metrics_are_computed_on_logit_margins() -> None:
    """Three examples; float's logit margins are 2, 0.5 and 0.1. The program loses 0.3 of the first
    margin, gains 0.2 on the second, and flips the third (its margin goes to -0.1: drift 0.2)."""
    ref = probabilities([[2.0, 0.0, -1.0], [0.0, 0.5, -3.0], [1.0, 0.9, 0.0]])
    out = probabilities([[1.7, 0.0, -1.0], [0.0, 0.7, -3.0], [0.9, 1.0, 0.0]])
    reference = Reference(ref, head=None, margins=(0.1,))
    np.testing.assert_allclose(reference.margin, [2.0, 0.5, 0.1], atol=1e-6)
    score = reference.score(out)
    assert score.top1 == pytest.approx(2 / 3)
    assert score.drift == pytest.approx((0.3 + 0.2 + 0.2) / 3, abs=1e-5)
    # Pairs (i, j) where example i's drift (0.3, -0.2, 0.2) exceeds example j's margin (2, 0.5, 0.1):
    # 0.3 > 0.1 and 0.2 > 0.1, so 2 flips in 9 pairs.
    assert score.expected_top1 == pytest.approx(1 - 2 / 9)
    # Decisive: float's top probability ahead of the second by more than 0.1 (the first two).
    gaps = np.sort(ref, axis=1)[:, -1] - np.sort(ref, axis=1)[:, -2]
    assert list(gaps > 0.1) == [True, True, False]
    assert score.decisive_top1 == {0.1: 1.0}
    assert score.value(AccuracyBudget.parse("top1@0.1>=99%")) == 1.0
    assert score.value(AccuracyBudget.parse("top1>=99%")) == pytest.approx(2 / 3)
    # Identical outputs: everything perfect, nothing lost.
    same = reference.score(ref)
    assert (same.top1, same.expected_top1, same.drift) == (1.0, 1.0, pytest.approx(0.0, abs=1e-6))
    assert same.cosine == pytest.approx(1.0)


def test_scores_that_are_not_probabilities_are_used_as_logits() -> None:
    ref = np.array([[3.0, 1.0, -2.0]], np.float32)  # rows do not sum to 1: raw class scores
    reference = Reference(ref, head=None)
    assert reference.margin[0] == pytest.approx(2.0)
    assert reference.score(np.array([[3.0, 2.5, 0.0]], np.float32)).drift == pytest.approx(1.5)


def test_a_head_maps_outputs_to_class_scores_and_losses_follow_the_budget_kind() -> None:
    ref = np.array([[2.0, 0.0], [0.0, 2.0]], np.float32)  # rows sum to 2: logits, not probabilities
    reference = Reference(ref, head=lambda f: f[:, ::-1])  # the head swaps the two classes
    assert list(reference.top1) == [1, 0]
    base = reference.score(ref)
    worse = reference.score(np.array([[1.8, 0.3], [0.0, 2.0]], np.float32))  # first margin 2 -> 1.5
    assert worse.loss(base, AccuracyBudget.parse("expected-top1>=0.9")) == pytest.approx(0.5 / 2)
    assert worse.loss(base, AccuracyBudget.parse("cosine>=0.9")) == pytest.approx(base.cosine - worse.cosine)
    assert base.loss(worse, AccuracyBudget.parse("cosine>=0.9")) == 0.0  # better is no loss
