"""Command-line options that several subcommands share.

Role: one definition of ``--format`` for classify, compile, quickstart and package, and of
``--model-path`` for the commands that build zoo models (its default is the SDK's, from
``fpgaserve.sdk.model_path``). Format names come from the numpy-free ``fpgaserve.npu.formats``, so
building the parser stays light.
"""

from __future__ import annotations

import argparse

from fpgaserve.npu.formats import AUTO_FORMAT, DEFAULT_BUDGET, DEFAULT_FORMAT, FORMATS
from fpgaserve.sdk.model_path import DEFAULT_MODEL_PATH

__all__ = ["add_format_option", "add_model_path_option", "wants_auto"]


def add_format_option(
    parser: argparse.ArgumentParser, *, what: str = "BFP format", default_budget: str = DEFAULT_BUDGET
) -> None:
    """``--format NAME`` (stored as ``args.fmt``; the subcommand resolves it with ``get_format``, or
    ``auto``) and ``--accuracy-budget`` (``args.budget``; None unless given: the subcommand then uses
    ``default_budget``, which the help names)."""
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMAT.name,
        dest="fmt",
        help=f"{what}: {', '.join(FORMATS)}, or {AUTO_FORMAT} for the narrowest format per layer that keeps "
        "the accuracy budget (default: %(default)s; see docs/numerics.md)",
    )
    parser.add_argument(
        "--accuracy-budget",
        dest="budget",
        default=None,
        metavar="BUDGET",
        help=f"with --format {AUTO_FORMAT} (implied): how close to float the program must stay on the "
        "calibration photos, e.g. 'expected-top1>=99%%' (agreement with float's top-1 class expected on "
        "inputs like them), 'top1>=99%%' (counted), 'top1@0.1>=99%%' (counted where float's top class "
        f"leads by more than 0.1) or 'cosine>=0.999' (default: {default_budget.replace('%', '%%')})",
    )


def add_model_path_option(parser: argparse.ArgumentParser) -> None:
    """``--model-path DIR`` (``args.model_path``): where compiled programs are kept, by default the
    same directory as the SDK's zoo models, so the CLI and Python share what either compiled."""
    parser.add_argument(
        "--model-path",
        default=DEFAULT_MODEL_PATH,
        help="where compiled programs are kept between runs (default: %(default)s)",
    )


def wants_auto(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a mixed-precision program."""
    return bool(args.budget) or str(args.fmt).lower() == AUTO_FORMAT
