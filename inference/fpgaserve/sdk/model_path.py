"""Where compiled device programs are kept between runs: one default for the SDK and the CLI.

Role: the zoo (``QuantizedModel(model_path=...)``) and every command with ``--model-path``
(classify, quickstart, package) take their default from ``DEFAULT_MODEL_PATH`` here, so a program
compiled by one is loaded by the other instead of being compiled again. An explicit path always
wins. Programs compiled before the two agreed, under the SDK's old default ``~/models``, are still
found: with the default path the zoo also looks there (``program_locations``) before compiling.
No numpy here: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL_PATH", "LEGACY_MODEL_PATH", "is_default", "program_locations"]

DEFAULT_MODEL_PATH = "~/.cache/fpgaserve/models"
# The SDK's default until 2026-12 (the CLI's was already DEFAULT_MODEL_PATH): read, never written.
LEGACY_MODEL_PATH = "~/models"


def is_default(model_path: str | os.PathLike[str]) -> bool:
    """Whether ``model_path`` is the default directory (as given, or expanded)."""
    return Path(model_path).expanduser() == Path(DEFAULT_MODEL_PATH).expanduser()


def program_locations(model_path: str | os.PathLike[str], relative: str | os.PathLike[str]) -> list[Path]:
    """Where to look for the program ``relative`` (``<model>/<file>.fpga``), first the place it is
    written to: ``model_path`` itself, then, when that is the default, the old default."""
    found = [Path(model_path).expanduser() / relative]
    if is_default(model_path):
        found.append(Path(LEGACY_MODEL_PATH).expanduser() / relative)
    return found
