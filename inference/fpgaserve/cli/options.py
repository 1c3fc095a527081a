"""Command-line options that several subcommands share.

Role: one definition of ``--format`` for classify, compile and quickstart. Format names come from
the numpy-free ``fpgaserve.npu.formats``, so building the parser stays light.
"""

from __future__ import annotations

import argparse

from fpgaserve.npu.formats import DEFAULT_FORMAT, FORMATS

__all__ = ["add_format_option"]


def add_format_option(parser: argparse.ArgumentParser, *, what: str = "BFP format") -> None:
    """``--format NAME`` (stored as ``args.fmt``); the subcommand resolves it with ``get_format``."""
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMAT.name,
        dest="fmt",
        help=f"{what}: {', '.join(FORMATS)} (default: %(default)s; see docs/numerics.md)",
    )
