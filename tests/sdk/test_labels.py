"""Tests for fpgaserve.sdk.labels: the shipped ImageNet class names are complete and in index order."""

from __future__ import annotations

from fpgaserve.sdk.labels import imagenet_labels


def test_names_are_in_ilsvrc_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench, Tinca tinca"
    assert labels[281] == "tabby, tabby cat"
    assert labels[504] == "coffee mug"
    assert labels[967] == "espresso"
    assert labels[999] == "toilet tissue, toilet paper, bathroom tissue"
    assert all(name and name == name.strip() for name in labels)


def test_callers_get_their_own_copy() -> None:
    imagenet_labels().clear()
    assert len(imagenet_labels()) == 1000
