"""ImageNet (ILSVRC-2012) class names shipped with the package, for the zoo's 1000-way classifiers.

Called by the model zoo, the benchmark and clients that turn a class index into a readable name.
The names are in the standard class-index order (sorted WordNet ids, ``n01440764`` first); their
provenance is in docs/models.md.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["imagenet_labels"]

_NUM_CLASSES = 1000


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, index ``i`` naming class ``i`` (e.g. 281 -> "tabby, tabby cat")."""
    return list(_load())  # a fresh list, so callers cannot corrupt the cached names


@functools.cache
def _load() -> tuple[str, ...]:
    text = resources.files("fpgaserve.sdk").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != _NUM_CLASSES:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} lines, expected {_NUM_CLASSES}")
    return names
