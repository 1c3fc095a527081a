"""The server side of ``bench/serving.py``: the ``fpgaserve serve`` process it measures.

It starts a real ``fpgaserve serve`` (of this checkout, or of another venv's for a side-by-side
baseline) on loopback with HTTP and gRPC ports, reads the URLs it logs, and waits for ``/readyz``.
Without a package, the child runs ``fpgaserve serve``'s own parser and server over the fake runtime:
``python bench/serving_server.py --serve-fake OPTIONS_JSON SERVE_ARGS...``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["fake_options", "start_server", "wait_ready"]

LISTENING = re.compile(r"listening on (https?://[^\s]+)")
GRPC_LISTENING = re.compile(r"listening for gRPC on ([^\s]+)")


def fake_options(args: argparse.Namespace) -> dict[str, Any]:
    from fpgaserve.server.testing import gemms_per_second_here

    return {
        "classes": 1000,
        "batch_cost_s": args.batch_cost_ms / 1000,
        "item_cost_s": args.item_cost_ms / 1000,
        "cost": "spin",
        # Measured once here and given to the server too: both runtimes do exactly the same work.
        "gemms_per_second": gemms_per_second_here(),
    }


def _server_argv(args: argparse.Namespace, python: str) -> list[str]:
    options = [
        "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0",
        "--max-batch-size", str(args.max_batch_size),
        "--max-batch-delay-ms", str(args.max_batch_delay_ms),
        "--max-queue", str(4 * args.clients),
    ]  # fmt: skip
    if args.model_dir:
        return [python, "-m", "fpgaserve.cli.main", "serve", args.model_dir, *options]
    return [python, str(Path(__file__).resolve()), "--serve-fake", json.dumps(fake_options(args)), *options]


def _serve_fake(options: dict[str, Any], argv: list[str]) -> int:
    """Child process: ``fpgaserve serve``'s own parser and server, over the fake runtime."""
    import logging

    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy loads, as in the parent)
    from fpgaserve.cli.main import build_parser
    from fpgaserve.cli.serve import settings_from_args
    from fpgaserve.server.server_main import run
    from fpgaserve.server.testing import FakeRuntime

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(build_parser().parse_args(["serve", "fake", *argv]))
    return run(runtime=FakeRuntime(**options), settings=settings)


def start_server(args: argparse.Namespace, python: str) -> tuple[subprocess.Popen[str], str, str]:
    """``python``'s ``fpgaserve serve`` (another checkout's venv: that checkout's server), its URLs."""
    # cwd "/": ``-m`` puts the working directory first on sys.path; nothing there may shadow a package.
    proc = subprocess.Popen(_server_argv(args, python), stderr=subprocess.PIPE, text=True, cwd="/")
    assert proc.stderr is not None
    deadline = time.monotonic() + 600
    grpc_target = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        grpc_match = GRPC_LISTENING.search(line)
        if grpc_match:
            grpc_target = grpc_match.group(1)
        match = LISTENING.search(line)
        if match and grpc_target:
            return proc, match.group(1), grpc_target
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stderr.read()}")


def wait_ready(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server never became ready")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--serve-fake"]:
        raise SystemExit(
            "usage: serving_server.py --serve-fake OPTIONS_JSON SERVE_ARGS... (bench/serving.py runs it)"
        )
    sys.exit(_serve_fake(json.loads(sys.argv[2]), sys.argv[3:]))
