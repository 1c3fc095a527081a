"""The ``fpgaserve`` console script.

Role: parse the command line and dispatch to one subcommand module. Each subcommand lives in its
own module with ``add_parser(subparsers)`` (under ``fpgaserve.cli``, and ``fpgaserve.operator.cli``
for ``operator``); those modules import nothing heavy at import time, so ``fpgaserve --help`` and
``fpgaserve operator`` never load TensorFlow.

``main`` imports only the module of the command being run (``COMMANDS`` names every module and
the one-line help ``--help`` lists, so the list needs none of them): ``fpgaserve serve``, a
pod's container command, no longer pays for importing the other ten subcommands' modules at
every start. ``build_parser()`` (tests, ``bench/serving.py``) still builds every subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from fpgaserve.api.errors import UserError, run_command

__all__ = ["COMMANDS", "UserError", "build_parser", "command_names", "main"]


class Command(NamedTuple):
    module: str  # its ``add_parser(subparsers)`` adds the command
    help: str  # what ``fpgaserve --help`` lists; tests/cli/test_cli.py checks it is the module's


# In the order --help lists them.
COMMANDS = {
    "quickstart": Command(
        "fpgaserve.cli.quickstart",
        "build, serve (HTTPS + key) and score a pipeline locally on an emulated FPGA",
    ),
    "classify": Command(
        "fpgaserve.cli.classify", "classify an image on an emulated FPGA, in-process (no server)"
    ),
    "package": Command(
        "fpgaserve.cli.package",
        "build a zoo pipeline into a service package (service_def.zip) to serve or register",
    ),
    "score": Command(
        "fpgaserve.cli.score", "score an image with a deployed service (POST /score, or gRPC with --grpc)"
    ),
    "serve": Command(
        "fpgaserve.cli.serve", "serve a model package over HTTP(S): /score, OIP v2, TF Serving REST"
    ),
    "compile": Command(
        "fpgaserve.cli.compile", "compile a Keras featurizer (.keras) into a device program (.fpga)"
    ),
    "model": Command(
        "fpgaserve.cli.model_commands", "register, list, show, download and delete models (FpgaModels)"
    ),
    "service": Command(
        "fpgaserve.cli.service_commands",
        "create, inspect, score and delete web services (FpgaWebservices)",
    ),
    "storage-init": Command(
        "fpgaserve.cli.storage_init",
        "download, verify and unpack a service package (the pod's init container)",
    ),
    "device-plugin": Command(
        "fpgaserve.cli.device_plugin",
        "run the emulated FPGA device plugin for the kubelet (and fail/restore its devices)",
    ),
    "dra-driver": Command(
        "fpgaserve.cli.dra_driver",
        "run the emulated FPGAs' DRA driver for the kubelet (instead of the device plugin)",
    ),
    "warm-kernels": Command(
        "fpgaserve.cli.warm_kernels", "compile the emulator's kernels into numba's cache (image build time)"
    ),
    "operator": Command(
        "fpgaserve.operator.cli",
        "run the Kubernetes operator for FpgaModel and FpgaWebservice (or print its manifest)",
    ),
}


def build_parser(*, only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with ``only``, that subcommand's module alone is imported
    and the others are listed by name and help (enough for ``fpgaserve --help``)."""
    parser = argparse.ArgumentParser(
        prog="fpgaserve",
        description="Serve models on emulated FPGAs: classify, compile, serve, and run the Kubernetes pieces.",
        epilog="New here? 'fpgaserve quickstart' builds, serves and scores a model on this machine. "
        "'fpgaserve COMMAND --help' describes each command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, command in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(command.module).add_parser(sub)
        else:
            sub.add_parser(name, help=command.help)
    return parser


def command_names() -> list[str]:
    """The subcommands, as typed on the command line (``storage-init``, ``device-plugin``...)."""
    return list(COMMANDS)


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the script's own
    options, ``-v`` and ``-h``, take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(words)
    # Without a known command (--help, a typo) argparse prints the list or the error from names alone.
    args = build_parser(only=command or "").parse_args(words)
    if not args.verbose:
        # TensorFlow's C++ start-up lines (CPU feature notices, oneDNN, absl) are for its
        # developers; errors still show. Set before any command imports TensorFlow.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Its Python INFO lines too ("Assets written to: /tmp/..." for every SavedModel a
        # pipeline writes): they read as the command's own progress. Warnings still show.
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    return run_command(args, name=f"fpgaserve {args.command}")


if __name__ == "__main__":
    sys.exit(main())
