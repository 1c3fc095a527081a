"""How commands print ranked labels (one format for classify, quickstart and score)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["print_top"]


def print_top(entries: Iterable[Mapping[str, Any]], *, value: str = "confidence") -> None:
    """One line per entry: rank, label, and ``entry[value]`` as a percentage."""
    for rank, entry in enumerate(entries, 1):
        print(f"  {rank}. {entry['label']:<40} {entry[value]:7.2%}")
