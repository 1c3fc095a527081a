"""The operator's command line: run the Kubernetes operator, or print the manifest that installs it.

Role: the operator Deployment's command, ``python -m fpgaserve.operator`` (``__main__``), and the
``fpgaserve operator`` subcommand of the console script (``fpgaserve.cli.main`` adds this parser).
It lives in the operator root so that the operator process imports nothing from the inference
root. Without a subcommand it runs the operator: kopf, the handlers, and a Kubernetes client
authenticated in-cluster or from the kubeconfig. ``manifest`` prints the ServiceAccount, RBAC and
Deployment. kopf and the kubernetes client are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fpgaserve.api.errors import UserError, run_command
from fpgaserve.operator.config import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE

__all__ = ["DEFAULT_NAMESPACE", "add_parser", "build_parser", "main"]

# A literal copy of install_objects.DEFAULT_NAMESPACE, so that building the parser imports no YAML
# renderer; tests/operator/test_cli.py checks that they agree.
DEFAULT_NAMESPACE = "fpgaserve-system"

DESCRIPTION = """\
Run the fpgaserve operator: it reconciles FpgaModel and FpgaWebservice objects (group
fpgaserve.io) into Deployments, Services, Ingresses, Secrets, HorizontalPodAutoscalers and
PodDisruptionBudgets, corrects drift every --resync-seconds, and reports status and Events.

Install the CRDs first (kubectl apply -f crds/). Give the namespaces to watch (--namespace,
repeatable) or --all-namespaces. Run one replica, or several with --peering NAME (kopf's peering:
one active, the others on standby).
"""

EPILOG = """\
examples:
  fpgaserve operator --namespace team-a --liveness http://0.0.0.0:8080/healthz
  fpgaserve operator --all-namespaces --peering fpgaserve-operator
  fpgaserve operator manifest --watch-namespace team-a --image registry.example/fpgaserve:0.1.0 | kubectl apply -f -
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``operator`` to the console script's subcommands."""
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator for FpgaModel and FpgaWebservice (or print its manifest)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m fpgaserve.operator``: the same options as ``fpgaserve operator``."""
    p = argparse.ArgumentParser(
        prog="python -m fpgaserve.operator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    _add_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fpgaserve.operator``; exit code 2 for a user's mistake."""
    return run_command(build_parser().parse_args(argv), name="fpgaserve operator")


def _add_options(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace to watch; repeatable",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--image", default=DEFAULT_IMAGE, help="server image for web services (default: %(default)s)"
    )
    p.add_argument(
        "--image-pull-policy",
        default="IfNotPresent",
        choices=["Always", "IfNotPresent", "Never"],
        help="for web services without their own (default: %(default)s)",
    )
    p.add_argument(
        "--cluster-domain", default="cluster.local", help="for in-cluster URLs (default: %(default)s)"
    )
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how often every object is reconciled again, correcting drift (default: %(default)s)",
    )
    p.add_argument(
        "--retry-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="first retry delay for a missing model or a held deletion, doubled up to 300 (default: %(default)s)",
    )
    p.add_argument(
        "--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    p.add_argument(
        "--peering", metavar="NAME", help="peer with other replicas through kopf's peering object NAME"
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest is active (default: random, since kopf freezes replicas "
        "that tie for the highest)",
    )
    p.set_defaults(func=_run)

    commands = p.add_subparsers(dest="operator_command", metavar="[COMMAND]", title="commands")
    manifest = commands.add_parser(
        "manifest", help="print the YAML that installs the operator (not the CRDs)"
    )
    manifest.add_argument(
        "--install-namespace",
        default=DEFAULT_NAMESPACE,
        help="namespace of the operator's Deployment and ServiceAccount (default: %(default)s)",
    )
    manifest.add_argument(
        "--image", default=argparse.SUPPRESS, help=f"server image for web services (default: {DEFAULT_IMAGE})"
    )
    manifest.add_argument(
        "--operator-image",
        default=DEFAULT_OPERATOR_IMAGE,
        help="the operator's own (slim) image (default: %(default)s)",
    )
    manifest.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only these namespaces (RoleBindings); repeatable; default: cluster-wide",
    )
    manifest.add_argument("--replicas", type=int, default=1, help="more than 1 turns on peering (default: 1)")
    manifest.set_defaults(func=_manifest)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from kubernetes import client, config

    from fpgaserve.operator.config import OperatorConfig
    from fpgaserve.operator.kube import Kube
    from fpgaserve.operator.runner import run

    if not args.namespace and not args.all_namespaces:
        raise UserError("give --namespace NS (repeatable) or --all-namespaces")
    if args.resync_seconds <= 0 or args.retry_seconds <= 0:
        raise UserError("--resync-seconds and --retry-seconds must be > 0")
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as exc:
            raise UserError(f"no in-cluster credentials and no usable kubeconfig: {exc}") from None
    settings = OperatorConfig(
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        cluster_domain=args.cluster_domain,
        resync_seconds=args.resync_seconds,
        retry_seconds=args.retry_seconds,
    )
    kube = Kube(api_client=client.ApiClient())
    try:
        asyncio.run(
            run(
                kube=kube,
                config=settings,
                namespaces=args.namespace,
                clusterwide=args.all_namespaces,
                liveness_endpoint=args.liveness,
                peering_name=args.peering,
                priority=args.priority,
            )
        )
    finally:
        kube.close()
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from fpgaserve.operator.install_objects import build_manifest, render_yaml

    if args.replicas < 1:
        raise UserError("--replicas must be at least 1")
    objects = build_manifest(
        namespace=args.install_namespace,
        image=getattr(args, "image", DEFAULT_IMAGE),
        operator_image=args.operator_image,
        watch_namespaces=args.watch_namespace or None,
        peering=args.replicas > 1,
        replicas=args.replicas,
    )
    sys.stdout.write(render_yaml(objects))
    return 0
