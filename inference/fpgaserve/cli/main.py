"""The ``fpgaserve`` console script.

Role: parse the command line and dispatch to one subcommand module. Each subcommand lives in its
own module with ``add_parser(subparsers)`` (under ``fpgaserve.cli``, and ``fpgaserve.operator.cli``
for ``operator``); those modules import nothing heavy at import time, so ``fpgaserve --help`` and
``fpgaserve operator`` never load TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fpgaserve.api.errors import UserError
from fpgaserve.cli import (
    classify,
    compile,
    device_plugin,
    quickstart,
    score,
    serve,
    storage_init,
)
from fpgaserve.operator import cli as operator_cli

__all__ = ["UserError", "build_parser", "command_names", "main"]

# In the order --help lists them.
SUBCOMMANDS = (quickstart, classify, score, serve, compile, storage_init, device_plugin, operator_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpgaserve",
        description="Serve models on emulated FPGAs: classify, compile, serve, and run the Kubernetes pieces.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def command_names() -> list[str]:
    """The subcommands, as typed on the command line (``storage-init``, ``device-plugin``...)."""
    actions = build_parser()._actions
    return [name for a in actions if isinstance(a, argparse._SubParsersAction) for name in a.choices]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"fpgaserve {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
