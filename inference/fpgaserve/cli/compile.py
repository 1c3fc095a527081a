"""Placeholder subcommand module (filled in by its owner)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compile", help="(not yet available)")
    p.set_defaults(func=lambda args: 1)
