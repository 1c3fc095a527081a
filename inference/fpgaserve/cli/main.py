"""The ``fpgaserve`` console script.

Role: parse the command line and dispatch to one subcommand module. Each subcommand lives in its
own module under ``fpgaserve.cli`` with ``add_parser(subparsers)``; those modules import nothing heavy
at import time, so ``fpgaserve --help`` and ``fpgaserve operator`` never load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fpgaserve.cli.errors import UserError

__all__ = ["UserError", "build_parser", "main"]

# Module names under fpgaserve.cli, in the order --help lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "quickstart",
    "classify",
    "score",
    "serve",
    "compile",
    "storage_init",
    "device_plugin",
    "operator",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpgaserve",
        description="Serve models on emulated FPGAs: classify, compile, serve, and run the Kubernetes pieces.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"fpgaserve.cli.{name}").add_parser(sub)
    return parser


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
