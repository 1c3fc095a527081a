"""``fpgaserve warm-kernels``: compile the emulator's numba kernels into a cache directory.

The Dockerfile runs it at build time so that a pod loads the kernels instead of compiling them
(``fpgaserve.npu.precompile``, ``fpgaserve.npu.kernel_cache``; docs/device.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fpgaserve.api.errors import UserError
from fpgaserve.npu.formats import FORMATS

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "warm-kernels",
        help="compile the emulator's kernels into numba's cache (image build time)",
        description="Compile every numba kernel signature the executor uses, for every BFP format, into "
        "a cache directory, so that later processes load them instead of compiling (seconds per kernel). "
        "Images carry the result in FPGASERVE_KERNEL_CACHE; a process copies what its writable "
        "NUMBA_CACHE_DIR lacks from there. Entries are valid for the CPU they were compiled on "
        "(docs/device.md).",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="the directory to fill (default: NUMBA_CACHE_DIR, else numba's own default next to the sources)",
    )
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=sorted(FORMATS),
        default=None,
        help="a format to compile for (repeatable; default: every preset)",
    )
    p.add_argument("--json", action="store_true", help="print what was compiled as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if "fpgaserve.npu.kernels_numba" in sys.modules:  # numba chose its directories already
        raise UserError("warm-kernels must run in a fresh process")
    target = None
    if args.cache_dir:
        target = Path(args.cache_dir).absolute()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{target}: cannot create the cache directory ({exc.strerror})") from exc
        if not os.access(target, os.W_OK):
            raise UserError(f"{target}: the cache directory is not writable")
        os.environ["NUMBA_CACHE_DIR"] = str(target)  # read when numba is first imported, below
    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.formats import get_format
    from fpgaserve.npu.precompile import warm_kernels

    formats = [get_format(name) for name in args.formats] if args.formats else None
    report = warm_kernels(formats=formats)
    if target is not None:
        stray = [p for p in report.cache_paths if not Path(p).is_relative_to(target)]
        if stray:  # numba falls back silently when a directory fails its write test
            raise UserError(f"numba cached the kernels in {', '.join(stray)} instead of {target}")
    if args.json:
        print(json.dumps(report.describe(), indent=2))
        return 0
    where = target or report.cache_dir or ", ".join(report.cache_paths)
    print(
        f"{report.compiled} kernel signatures compiled, {report.loaded} already cached, for "
        f"{', '.join(report.formats)} in {report.seconds:.1f} s"
    )
    print(f"cache: {where}")
    print(f"CPU: {report.cpu} (entries load only on this CPU; others compile on first use)")
    return 0
