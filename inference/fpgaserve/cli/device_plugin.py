"""``fpgaserve device-plugin``: run the emulated FPGA device plugin, and drill its devices.

Role: the command line of ``fpgaserve.deviceplugin``. Without a subcommand it runs the plugin (the
DaemonSet's command); ``status``, ``fail`` and ``restore`` read and write the devices' state
directories (run them on the node, e.g. with ``kubectl exec`` into the plugin pod); ``manifest``
prints the DaemonSet. grpc and the plugin are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from fpgaserve.api.constants import SLIM_IMAGE

__all__ = ["add_parser"]

logger = logging.getLogger(__name__)

# Literal copies of fpgaserve.api.constants / fpgaserve.deviceplugin defaults, so that building the
# parser imports nothing; tests/deviceplugin/test_cli.py checks that they agree.
DEFAULT_RESOURCE_NAME = "fpgaserve.io/fpga"
DEFAULT_SOCKET_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_STATE_DIR = "/var/lib/kubelet/device-plugins/fpgaserve"
DEFAULT_DEVICE_MODEL = "pbs-s10"

DESCRIPTION = """\
Run the emulated FPGA device plugin for the kubelet (Device Plugin API v1beta1).

It lays out COUNT emulated devices of one device model under --state-dir (one directory per
device: device.json and a health file), registers the resource with the kubelet through
--socket-dir/kubelet.sock, streams device health to it, and registers again whenever the kubelet
restarts. Pods that request the resource get FPGASERVE_DEVICE_IDS, FPGASERVE_DEVICE_MODEL and
their devices' state directories mounted read-only at /var/run/fpgaserve/devices/<id>.
"""

EPILOG = """\
Without COMMAND it runs the plugin. status, fail and restore act on the node they run on: run
them in that node's plugin pod (kubectl exec) or on the node itself.

examples:
  fpgaserve device-plugin --device-count 4 --device-model pbs-s10
  kubectl -n kube-system exec POD -- fpgaserve device-plugin fail fpga-1a2b3c4d-0 --reason drill
  fpgaserve device-plugin manifest --image registry.example/fpgaserve:0.1.0 | kubectl apply -f -
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "device-plugin",
        help="run the emulated FPGA device plugin for the kubelet (and fail/restore its devices)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_device_options(p, suppress=False)
    _add_state_dir(p, suppress=False)
    p.add_argument(
        "--socket-dir",
        default=DEFAULT_SOCKET_DIR,
        help="the kubelet's device-plugins directory, holding kubelet.sock (default: %(default)s)",
    )
    p.add_argument(
        "--host-state-dir",
        metavar="DIR",
        help="--state-dir as the node sees it, for the mounts the kubelet makes (default: --state-dir)",
    )
    p.add_argument(
        "--node-name",
        help="node name the stable device IDs derive from (default: $NODE_NAME, else the hostname)",
    )
    p.add_argument(
        "--health-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often device health is checked and changes streamed to the kubelet (default: %(default)s)",
    )
    p.add_argument(
        "--kubelet-poll-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often kubelet.sock is checked for a kubelet restart (default: %(default)s)",
    )
    p.set_defaults(func=_run)

    commands = p.add_subparsers(dest="device_plugin_command", metavar="[COMMAND]", title="commands")
    status = commands.add_parser("status", help="list this node's devices and their health")
    _add_state_dir(status, suppress=True)
    status.set_defaults(func=_status)

    fail = commands.add_parser("fail", help="mark a device unhealthy (for tests and drills)")
    fail.add_argument("device_id", metavar="ID", help="device ID, as `status` lists it")
    fail.add_argument("--reason", default="failed by hand", help="why, shown in logs (default: %(default)s)")
    _add_state_dir(fail, suppress=True)
    fail.set_defaults(func=_fail)

    restore = commands.add_parser("restore", help="mark a device healthy again")
    restore.add_argument("device_id", metavar="ID", help="device ID, as `status` lists it")
    _add_state_dir(restore, suppress=True)
    restore.set_defaults(func=_restore)

    manifest = commands.add_parser("manifest", help="print the DaemonSet YAML that runs the plugin")
    manifest.add_argument(
        "--namespace", default="kube-system", help="namespace of the DaemonSet (default: %(default)s)"
    )
    manifest.add_argument("--image", default=SLIM_IMAGE, help="the plugin's image (default: %(default)s)")
    manifest.add_argument(
        "--node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only run on nodes with this label; repeatable",
    )
    _add_device_options(manifest, suppress=True)
    manifest.set_defaults(func=_manifest)


def _add_device_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Subcommands repeat some options; SUPPRESS keeps a subcommand's absent option from overwriting
    # the value given before the subcommand (argparse copies subparser defaults over the parent's).
    def default(value: object) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument(
        "--device-count",
        type=int,
        default=default(4),
        metavar="COUNT",
        help="number of emulated FPGAs to advertise on the node (default: 4)",
    )
    p.add_argument(
        "--device-model",
        default=default(DEFAULT_DEVICE_MODEL),
        metavar="NAME",
        help=f"device model: pbs-s10, pbs-a10 or pbs-tiny (default: {DEFAULT_DEVICE_MODEL})",
    )
    p.add_argument(
        "--resource-name",
        default=default(DEFAULT_RESOURCE_NAME),
        help=f"extended resource pods request (default: {DEFAULT_RESOURCE_NAME})",
    )
    if suppress:
        return
    group = p.add_argument_group("device model overrides (the model is then named NAME-custom)")
    group.add_argument("--weight-memory-mib", type=int, metavar="MIB", help="weight memory per device")
    group.add_argument("--matrix-units", type=int, metavar="N", help="matrix units per device")
    group.add_argument("--clock-mhz", type=float, metavar="MHZ", help="clock frequency")


def _add_state_dir(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    p.add_argument(
        "--state-dir",
        default=argparse.SUPPRESS if suppress else DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"where the devices' state directories live (default: {DEFAULT_STATE_DIR})",
    )


def _user_error(message: str) -> Exception:
    from fpgaserve.api.errors import UserError

    return UserError(message)


def _device_model(args: argparse.Namespace) -> Any:
    import dataclasses

    from fpgaserve.npu.device import MiB, get_device_model

    try:
        model = get_device_model(args.device_model)
        overrides: dict[str, Any] = {}
        if args.weight_memory_mib is not None:
            overrides["weight_memory_bytes"] = args.weight_memory_mib * MiB
        if args.matrix_units is not None:
            overrides["matrix_units"] = args.matrix_units
        if args.clock_mhz is not None:
            overrides["clock_mhz"] = args.clock_mhz
        if overrides:
            # A new name, so nobody mistakes the changed board for the stock model of that name.
            model = dataclasses.replace(model, name=f"{model.name}-custom", **overrides)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    return model


def _run(args: argparse.Namespace) -> int:
    from fpgaserve.deviceplugin.server import RegistrationError, check_resource_name, serve_devices
    from fpgaserve.deviceplugin.state import DeviceStore

    if args.device_count < 1:
        raise _user_error("--device-count must be at least 1")
    if args.health_interval <= 0 or args.kubelet_poll_interval <= 0:
        raise _user_error("--health-interval and --kubelet-poll-interval must be > 0")
    try:
        check_resource_name(args.resource_name)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    model = _device_model(args)
    # Handlers before any work, so that a SIGTERM always ends in an orderly stop.
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    node_name = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    store = DeviceStore(Path(args.state_dir))
    devices = store.create(node_name=node_name, count=args.device_count, model=model)
    logger.info(
        "%d %s device(s) on node %s: %s",
        len(devices),
        model.name,
        node_name,
        ", ".join(d.device_id for d in devices),
    )
    try:
        serve_devices(
            store=store,
            socket_dir=Path(args.socket_dir),
            resource_name=args.resource_name,
            health_interval=args.health_interval,
            host_state_dir=PurePosixPath(args.host_state_dir) if args.host_state_dir else None,
            poll_interval=args.kubelet_poll_interval,
            stop=stop,
        )
    except RegistrationError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("device plugin stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fpgaserve.deviceplugin.state import DeviceStore

    devices = DeviceStore(Path(args.state_dir)).read_all()
    if not devices:
        raise _user_error(f"no devices under {args.state_dir}; is the device plugin running on this node?")
    print(f"{'ID':<22} {'HEALTH':<10} {'MODEL':<16} REASON")
    for device in devices:
        health = "Healthy" if device.healthy else "Unhealthy"
        print(f"{device.device_id:<22} {health:<10} {device.model.name:<16} {device.reason}".rstrip())
    return 0


def _set_health(args: argparse.Namespace, *, healthy: bool, reason: str) -> int:
    from fpgaserve.deviceplugin.state import DeviceStateError, DeviceStore

    try:
        device = DeviceStore(Path(args.state_dir)).set_health(args.device_id, healthy=healthy, reason=reason)
    except DeviceStateError as exc:
        raise _user_error(str(exc)) from None
    state = "healthy" if device.healthy else "unhealthy"
    print(f"{device.device_id} is now {state}; the plugin tells the kubelet on its next health check")
    return 0


def _fail(args: argparse.Namespace) -> int:
    return _set_health(args, healthy=False, reason=args.reason)


def _restore(args: argparse.Namespace) -> int:
    return _set_health(args, healthy=True, reason="")


def _manifest(args: argparse.Namespace) -> int:
    from fpgaserve.deviceplugin.daemonset import build_daemonset, render_yaml
    from fpgaserve.deviceplugin.server import check_resource_name
    from fpgaserve.npu.device import get_device_model

    selector: dict[str, str] = {}
    for item in args.node_selector:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _user_error(f"--node-selector {item!r}: expected KEY=VALUE")
        selector[key] = value
    try:
        check_resource_name(args.resource_name)
        get_device_model(args.device_model)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    daemonset = build_daemonset(
        namespace=args.namespace,
        image=args.image,
        resource_name=args.resource_name,
        device_count=args.device_count,
        device_model=args.device_model,
        node_selector=selector or None,
    )
    sys.stdout.write(render_yaml(daemonset))
    return 0
