"""``fpgaserve model register|list|show|download|delete``: the SDK's ``Model`` on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpgaserve.api.errors import UserError
from fpgaserve.cli.cluster_options import (
    add_output_option,
    add_workspace_options,
    errors_as_user_errors,
    print_result,
    workspace,
)

__all__ = ["add_parser"]

COLUMNS = ("name", "state", "sha256", "usedBy", "tags")


def _pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("model", help="register, list, show, download and delete models (FpgaModels)",
                       description="Models of a workspace: packages in its store, FpgaModels in its namespace.")  # fmt: skip
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    register = verbs.add_parser(
        "register",
        help="upload a service_def.zip and create or update the FpgaModel",
        description="Upload a service_def.zip to the workspace's package store, create or update its "
        "FpgaModel and wait until it is Ready (--timeout).",
    )
    register.add_argument(
        "package", help="a service_def.zip (ModelDefinition.save or zoo_pipeline(model).save)"
    )
    register.add_argument("--name", required=True, help="the model's name (an RFC 1123 label)")
    register.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a tag (repeatable)")
    register.add_argument("--property", action="append", metavar="KEY=VALUE", help="a property (repeatable)")
    register.add_argument("--description", default=None, help="free text shown with the model")
    register.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait until it is Ready (default: %(default)s)",
    )
    listing = verbs.add_parser(
        "list",
        help="the workspace's models",
        description="List the workspace's models (FpgaModels in its namespace).",
    )
    listing.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only models with this tag")
    show = verbs.add_parser(
        "show",
        help="one model",
        description="Show one model: its state, sha256, the web services that use it, its tags and "
        "package URI.",
    )
    download = verbs.add_parser(
        "download",
        help="fetch the package (sha256-checked)",
        description="Download a model's package into --target-dir as service_def.zip, checking its sha256.",
    )
    download.add_argument(
        "--target-dir", default=".", help="directory for service_def.zip (default: %(default)s)"
    )
    download.add_argument("--overwrite", action="store_true", help="replace an existing file")
    delete = verbs.add_parser(
        "delete",
        help="delete the FpgaModel (refused while web services use it)",
        description="Delete a model's FpgaModel; refused while web services use it.",
    )
    for v in (show, download, delete):
        v.add_argument("name", help="the registered model's name")
    for v in (register, listing, show, download, delete):
        add_workspace_options(v)
        add_output_option(v)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fpgaserve.sdk.cluster.model import Model

    if args.verb == "register" and not Path(args.package).is_file():
        # Before the workspace: without a cluster, a mistyped path would read as a kubeconfig error.
        raise UserError(
            f"{args.package}: no such file; a package is a service_def.zip written by "
            "ModelDefinition.save or zoo_pipeline(model).save"
        )
    with errors_as_user_errors():
        ws = workspace(args)
        if args.verb == "register":
            model = Model.register(ws, args.package, args.name, tags=_pairs(args.tag),
                                   properties=_pairs(args.property), description=args.description,
                                   timeout_sec=args.timeout)  # fmt: skip
            print_result(model.serialize(), output=args.output, columns=COLUMNS)
        elif args.verb == "list":
            models = Model.list(ws, tags=_pairs(args.tag))
            print_result([m.serialize() for m in models], output=args.output, columns=COLUMNS)
        elif args.verb == "show":
            print_result(Model(ws, args.name).serialize(), output=args.output, columns=(*COLUMNS, "uri"))
        elif args.verb == "download":
            path = Model(ws, args.name).download(args.target_dir, exist_ok=args.overwrite)
            print_result({"name": args.name, "path": path}, output=args.output)
        else:
            Model(ws, args.name).delete()
            print_result({"name": args.name, "deleted": True}, output=args.output)
    return 0
