"""``fpgaserve service create|list|show|update|get-keys|regen-key|get-logs|run|delete``: the SDK's
``Webservice`` on the command line (``--wait`` shows progress while a service comes up)."""

from __future__ import annotations

import argparse
import sys

from fpgaserve.cli.cluster_options import (
    add_output_option,
    add_workspace_options,
    errors_as_user_errors,
    print_result,
    workspace,
)

__all__ = ["add_parser"]

COLUMNS = ("name", "model", "state", "readyReplicas", "scoringUri", "error")


def _add_config_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    d = (lambda value: value) if defaults else (lambda value: None)
    p.add_argument(
        "--replicas",
        type=int,
        default=d(1),
        help="replicas (without autoscale)" + (" (default: 1)" if defaults else " (default: unchanged)"),
    )
    p.add_argument(
        "--fpgas",
        type=int,
        default=d(1),
        help="FPGAs per replica (0: CPU only)" + (" (default: 1)" if defaults else " (default: unchanged)"),
    )
    p.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=d(True),
        help="key authentication; --no-auth turns it off"
        + (" (default: on)" if defaults else " (default: unchanged)"),
    )
    if defaults:
        p.add_argument("--no-ssl", dest="ssl", action="store_false", help="plain HTTP on the server")
        p.add_argument(
            "--ssl-cert", default=None, help="your certificate PEM (with --ssl-key; default self-signed)"
        )
        p.add_argument("--ssl-key", default=None, help="your private key PEM")
        p.add_argument(
            "--autoscale", default=None, metavar="MIN:MAX", help="autoscale between MIN and MAX replicas"
        )
        p.add_argument("--ingress-host", default=None, help="expose through an Ingress on this host")
        p.add_argument("--image", default=None, help="server image (default: the operator's)")
    p.add_argument("--wait", action="store_true", help="wait until Ready, showing progress")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits (default: %(default)s)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("service", help="create, inspect, score and delete web services (FpgaWebservices)",
                       description="Web services of a workspace: FpgaWebservices in its namespace.")  # fmt: skip
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    create = verbs.add_parser(
        "create",
        help="deploy a registered model as a web service",
        description="Deploy a registered model as a web service (an FpgaWebservice): replicas, FPGAs per "
        "replica, key auth and TLS (both on by default), an optional Ingress and autoscaling. With "
        "--wait, show progress until it is Ready.",
    )
    create.add_argument("name", help="the web service's name (an RFC 1123 label)")
    create.add_argument("--model", required=True, help="a registered model's name")
    create.add_argument("--overwrite", action="store_true", help="replace an existing service's spec")
    _add_config_options(create, defaults=True)
    listing = verbs.add_parser(
        "list",
        help="the workspace's web services",
        description="List the workspace's web services (FpgaWebservices in its namespace).",
    )
    listing.add_argument("--model", default=None, help="only services of this model")
    show = verbs.add_parser(
        "show",
        help="one web service",
        description="Show one web service: its model, state, ready replicas, scoring URI and last error.",
    )
    update = verbs.add_parser(
        "update",
        help="change replicas, FPGAs, auth or the model",
        description="Change a web service's replicas, FPGAs per replica, key auth or model; what you "
        "leave out stays as it is.",
    )
    update.add_argument("--model", default=None, help="deploy this registered model instead")
    _add_config_options(update, defaults=False)
    keys = verbs.add_parser(
        "get-keys",
        help="the primary and secondary keys",
        description="Print a web service's primary and secondary keys.",
    )
    regen = verbs.add_parser(
        "regen-key",
        help="replace a key (a fresh one, or --set-key)",
        description="Replace a web service's primary or secondary key with a fresh one, or with --set-key's "
        "value.",
    )
    regen.add_argument("--key", choices=("Primary", "Secondary"), required=True, help="which key to replace")
    regen.add_argument("--set-key", default=None, help="the new key's value (default: generated)")
    logs = verbs.add_parser(
        "get-logs",
        help="the server's log (storage-init's with --init)",
        description="Print the end of each of the web service's pods' server log (storage-init's "
        "with --init).",
    )
    logs.add_argument(
        "--lines",
        type=int,
        default=200,
        help="the last N lines of each pod's log (default: %(default)s)",
        metavar="N",
    )
    logs.add_argument("--init", action="store_true", help="storage-init's log (the init container) instead")
    run = verbs.add_parser(
        "run",
        help="score an image (Ingress, else a port-forward or --connect)",
        description="Score an image with a web service: through its Ingress if it has one, else "
        "through a port-forward to one of its pods, or at --connect HOST:PORT.",
    )
    delete = verbs.add_parser(
        "delete",
        help="delete the service and wait until it is gone",
        description="Delete a web service and wait until it is gone.",
    )
    for v in (show, update, keys, regen, logs, run, delete):
        v.add_argument("name", help="the web service's name")
    run.add_argument("image", help="a JPEG or PNG file")
    for v in (create, listing, show, update, keys, regen, logs, run, delete):
        add_workspace_options(v, connect=v is run)
        if v is not logs:  # get-logs prints the log as it is
            add_output_option(v)
    p.set_defaults(func=_run)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from fpgaserve.sdk.cluster.flavours import BrainwaveWebservice
    from fpgaserve.sdk.cluster.model import Model
    from fpgaserve.sdk.cluster.webservice import Webservice
    from fpgaserve.sdk.exceptions import WebserviceException

    with errors_as_user_errors():
        ws = workspace(args)
        service: Webservice | None = None
        if args.verb == "create":
            low, high = 1, 3
            if args.autoscale:
                try:
                    low, high = (int(v) for v in args.autoscale.split(":"))
                except ValueError:
                    raise WebserviceException(f"--autoscale {args.autoscale}: expected MIN:MAX") from None
            config = BrainwaveWebservice.deploy_configuration(
                num_replicas=args.replicas, autoscale_enabled=bool(args.autoscale), autoscale_min_replicas=low,
                autoscale_max_replicas=high, fpga_count=args.fpgas, ssl_enabled=args.ssl,
                ssl_cert_pem_file=args.ssl_cert, ssl_key_pem_file=args.ssl_key, auth_enabled=args.auth,
                ingress_host=args.ingress_host,
            )  # fmt: skip
            from fpgaserve.sdk.cluster.flavours import BrainwaveImage

            image = BrainwaveImage.image_configuration(image=args.image)
            service = Webservice.deploy_from_model(
                ws, args.name, [Model(ws, args.model)], image, config, args.overwrite
            )
        elif args.verb == "update":
            service = Webservice(ws, args.name)
            service.update(models=[Model(ws, args.model)] if args.model else None, num_replicas=args.replicas,
                           auth_enabled=args.auth, fpga_count=args.fpgas)  # fmt: skip
        if service is not None:
            if args.wait:
                service.wait_for_deployment(True, args.timeout, printer=_progress)
            service.refresh()
            print_result(service.serialize(), output=args.output, columns=COLUMNS)
        elif args.verb == "list":
            found = Webservice.list(ws, model_name=args.model)
            print_result([s.serialize() for s in found], output=args.output, columns=COLUMNS)
        elif args.verb == "show":
            print_result(Webservice(ws, args.name).serialize(), output=args.output, columns=COLUMNS)
        elif args.verb == "get-keys":
            primary, secondary = Webservice(ws, args.name).get_keys()
            print_result({"primaryKey": primary, "secondaryKey": secondary}, output=args.output)
        elif args.verb == "regen-key":
            Webservice(ws, args.name).regen_key(args.key, args.set_key)
            print_result({"name": args.name, "regenerated": args.key}, output=args.output)
        elif args.verb == "get-logs":
            print(Webservice(ws, args.name).get_logs(args.lines, init=args.init))
        elif args.verb == "run":
            answer = Webservice(ws, args.name).score(args.image)
            result = answer["results"][0]
            top = result.get("top5") or [
                {"label": f"class {i}", "probability": p}
                for i, p in sorted(enumerate(result["probabilities"]), key=lambda x: -x[1])[:5]
            ]
            data = answer if args.output != "table" else top
            print_result(data, output=args.output, columns=("label", "probability"))
        else:
            Webservice(ws, args.name).delete()
            print_result({"name": args.name, "deleted": True}, output=args.output)
    return 0
