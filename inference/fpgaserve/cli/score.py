"""``fpgaserve score URL IMAGE --key KEY [--grpc]``: score an image with any deployed service."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fpgaserve.api.errors import UserError
from fpgaserve.cli.output import print_top

__all__ = ["add_parser"]

DESCRIPTION = """\
POST an image to a service's /score (local, port-forwarded or behind an Ingress) and print its
top-5 labels; with --grpc, call its gRPC port instead (the Open Inference Protocol's ModelInfer
with the classification extension). The key may also come from FPGASERVE_KEY.
"""

EPILOG = """\
examples:
  fpgaserve score https://127.0.0.1:8443 cat.jpg --key "$KEY" --cacert cert.pem
  fpgaserve score https://imagenet.example.com/score cat.jpg --json
  fpgaserve score --grpc grpcs://127.0.0.1:8081 cat.jpg --key "$KEY" --cacert cert.pem
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "score",
        help="score an image with a deployed service (POST /score, or gRPC with --grpc)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "url",
        help="the service's base URL or /score URL, e.g. https://127.0.0.1:8443; with --grpc its gRPC "
        "target: grpcs://host:8081 (TLS) or host:8081 (plaintext)",
    )
    p.add_argument("image", help="a JPEG or PNG file")
    p.add_argument("--key", default=None, help="primary or secondary key (default: $FPGASERVE_KEY)")
    p.add_argument("--cacert", default=None, help="CA or self-signed certificate to trust for HTTPS")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the answer (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the service's whole JSON answer")
    p.add_argument("--grpc", action="store_true", help="call the service's gRPC port (see URL)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os

    from fpgaserve.sdk.client import ScoringError, score

    path = Path(args.image)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    key = args.key or os.environ.get("FPGASERVE_KEY")
    if args.grpc:
        return _run_grpc(args, path, key)
    try:
        answer = score(
            args.url, path, key=key, cafile=args.cacert, insecure=args.insecure, timeout=args.timeout
        )
    except ScoringError as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    result = answer["results"][0]
    top = result.get("top5")
    if top:
        print_top(top, value="probability")
    else:  # a package without labels: the five largest outputs by index
        probs = result["probabilities"]
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[:5]
        print_top([{"label": f"class {i}", "p": probs[i]} for i in ranked], value="p")
    return 0


def _run_grpc(args: argparse.Namespace, path: Path, key: str | None) -> int:
    from fpgaserve.sdk.client import ScoringError
    from fpgaserve.sdk.grpc_client import PredictionClient

    try:
        with PredictionClient.from_url(
            args.url, key=key, cafile=args.cacert, insecure=args.insecure, timeout=args.timeout
        ) as client:
            answer = client.classify(path, k=5)
    except (ScoringError, OSError) as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print_top(answer["top"], value="probability")
    return 0
