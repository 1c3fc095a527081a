"""Options and output shared by ``fpgaserve model`` and ``fpgaserve service``.

Role: one workspace from ``--config``/``--context``/``--namespace`` (and ``--connect`` for a pod
reachable without a port-forward), one ``--output table|json|yaml`` printer, and one translation
of the SDK's errors (API, store, scoring) into ``UserError`` lines that say what to do next. Each
command gets only the options it uses: ``--connect`` only where a pod is reached (``service run``),
``--output`` only where a result is printed through ``print_result``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fpgaserve.api.errors import UserError

__all__ = ["add_output_option", "add_workspace_options", "errors_as_user_errors", "print_result", "workspace"]


def add_workspace_options(p: argparse.ArgumentParser, *, connect: bool = False) -> None:
    """``--config``, ``--context`` and ``--namespace``; with ``connect``, ``--connect`` too (for a
    command that reaches a pod: elsewhere it would be accepted and do nothing)."""
    p.add_argument("--config", default=None, help="workspace config file or directory (default: searched "
                   "from the current directory: .fpgaserve/config.json, .azureml/config.json, config.json)")  # fmt: skip
    p.add_argument(
        "--context", default=None, help="kubeconfig context (default: the config's, else the current)"
    )
    p.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the config's, else the context's)"
    )
    if connect:
        p.add_argument("--connect", default=None, metavar="HOST:PORT",
                       help="reach the service's pod at HOST:PORT instead of a port-forward (a VPN, a local run)")  # fmt: skip


def add_output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="output format (default: %(default)s)",
    )


def workspace(args: argparse.Namespace) -> Any:
    from fpgaserve.sdk.cluster.connect import DirectAddress
    from fpgaserve.sdk.cluster.workspace import Workspace

    connector = None
    address = getattr(args, "connect", None)  # only the commands that reach a pod have it
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--connect {address}: expected HOST:PORT")
        connector = DirectAddress(host, int(port))
    return Workspace.from_config(
        args.config, context=args.context, namespace=args.namespace, connector=connector
    )


@contextlib.contextmanager
def errors_as_user_errors() -> Iterator[None]:
    """The SDK's transport errors as one-line UserErrors with a next step."""
    from fpgaserve.api.kinds import ApiError
    from fpgaserve.sdk.client import ScoringError
    from fpgaserve.sdk.cluster.store import StoreError

    try:
        yield
    except ApiError as exc:
        hint = "is the cluster reachable and is the fpgaserve CRD installed (kubectl apply -f crds/)?"
        if exc.status in (401, 403):
            hint = "check your kubeconfig credentials and RBAC for this namespace"
        raise UserError(f"{exc}; {hint}") from None
    except StoreError as exc:
        raise UserError(f"package store: {exc}; check the 'store' section of the workspace config") from None
    except ScoringError as exc:
        raise UserError(f"{exc}; `fpgaserve service show NAME` shows its state") from None


def print_result(data: Any, *, output: str, columns: Sequence[str] | None = None) -> None:
    """JSON, YAML, or a table of ``columns`` (rows: a list of dicts, or one dict)."""
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    if output == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=True), end="")
        return
    rows: list[Mapping[str, Any]] = data if isinstance(data, list) else [data]
    cols = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)
