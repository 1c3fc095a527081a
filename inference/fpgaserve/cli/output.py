"""How commands print: ranked labels (one format for classify, quickstart and score) and the
``... step`` progress lines of long commands (on stderr, so stdout stays the result)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SEARCH_NOTE", "print_top", "progress"]

# What a first build with --format auto adds (a plain format compiles in under a second).
SEARCH_NOTE = "the precision search takes minutes the first time; the program is cached"


def print_top(entries: Iterable[Mapping[str, Any]], *, value: str = "confidence") -> None:
    """One line per entry: rank, label, and ``entry[value]`` as a percentage."""
    for rank, entry in enumerate(entries, 1):
        print(f"  {rank}. {entry['label']:<40} {entry[value]:7.2%}")


def progress(message: str, *, quiet: bool = False) -> float:
    """Print ``... message`` on stderr (unless ``quiet``); returns ``time.perf_counter()``, the step's
    start."""
    if not quiet:
        print(f"... {message}", file=sys.stderr, flush=True)
    return time.perf_counter()
