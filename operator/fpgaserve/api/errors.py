"""The one exception type a command raises for a user's mistake, and the loop that runs a command.

Role: shared by both command lines, ``fpgaserve`` (``fpgaserve.cli.main``) and the operator's own
``python -m fpgaserve.operator`` (``fpgaserve.operator.cli``): ``run_command`` sets up logging, runs
the parsed command, and prints a ``UserError`` as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["UserError", "run_command"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""


def run_command(args: argparse.Namespace, *, name: str) -> int:
    """Run ``args.func(args)`` with logging at INFO (DEBUG with ``args.verbose``); the exit code."""
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
