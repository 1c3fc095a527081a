"""The ``fpgaserve`` console script.

Role: parse the command line and dispatch to one subcommand module. Each subcommand lives in its
own module with ``add_parser(subparsers)`` (under ``fpgaserve.cli``, and ``fpgaserve.operator.cli``
for ``operator``); those modules import nothing heavy at import time, so ``fpgaserve --help`` and
``fpgaserve operator`` never load TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fpgaserve.api.errors import UserError, run_command
from fpgaserve.cli import (
    classify,
    compile,
    device_plugin,
    dra_driver,
    model_commands,
    quickstart,
    score,
    serve,
    service_commands,
    storage_init,
    warm_kernels,
)
from fpgaserve.operator import cli as operator_cli

__all__ = ["UserError", "build_parser", "command_names", "main"]

# In the order --help lists them.
SUBCOMMANDS = (
    quickstart,
    classify,
    score,
    serve,
    compile,
    model_commands,
    service_commands,
    storage_init,
    device_plugin,
    dra_driver,
    warm_kernels,
    operator_cli,
)


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def command_names() -> list[str]:
    """The subcommands, as typed on the command line (``storage-init``, ``device-plugin``...)."""
    return list(_build()[1])


def _build() -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser and its subcommands' names, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="fpgaserve",
        description="Serve models on emulated FPGAs: classify, compile, serve, and run the Kubernetes pieces.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    # ``add_subparsers`` returns an Action; its ``choices`` map each name to its parser.
    return parser, list(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # TensorFlow's C++ start-up lines (CPU feature notices, oneDNN, absl) are for its
        # developers; errors still show. Set before any command imports TensorFlow.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return run_command(args, name=f"fpgaserve {args.command}")


if __name__ == "__main__":
    sys.exit(main())
