"""``fpgaserve dra-driver``: run the emulated FPGAs' DRA driver on a node.

Role: the command line of ``fpgaserve.dra`` (the DRA DaemonSet's command). It lays out the devices
as ``fpgaserve device-plugin`` does (same state directory layout, so ``device-plugin status``,
``fail`` and ``restore`` drill them too), publishes the node's ResourceSlice and serves the kubelet.
grpc, the kubernetes client and the driver are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from fpgaserve.cli import device_plugin

__all__ = ["add_parser"]

logger = logging.getLogger(__name__)

# Literal copies of fpgaserve.api.constants / fpgaserve.dra defaults, so that building the parser
# imports nothing.
DEFAULT_DRIVER_NAME = "fpga.fpgaserve.io"
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/plugins/fpga.fpgaserve.io"
DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
DEFAULT_CDI_DIR = "/var/run/cdi"
DEFAULT_STATE_DIR = "/var/lib/kubelet/plugins/fpga.fpgaserve.io/devices"

DESCRIPTION = """\
Run the emulated FPGAs' Dynamic Resource Allocation driver (resource.k8s.io/v1, kubelet DRA v1).

It lays out COUNT emulated devices under --state-dir, publishes one ResourceSlice for the node
listing the healthy ones with their attributes (model, matrixUnits, nativeDim, clockMHz, formats)
and capacity (weightMemory), registers with the kubelet through --registry-dir, and prepares
claims: each prepared claim gets a CDI spec in --cdi-dir giving the container FPGASERVE_DEVICE_IDS,
FPGASERVE_DEVICE_MODEL and its devices' state directories read-only, checkpointed in --plugin-dir.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dra-driver",
        help="run the emulated FPGAs' DRA driver for the kubelet (instead of the device plugin)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device-count", type=int, default=4, metavar="COUNT",
                   help="number of emulated FPGAs to publish on the node (default: %(default)s)")  # fmt: skip
    p.add_argument("--device-model", default="pbs-s10", metavar="NAME",
                   help="device model: pbs-s10, pbs-a10 or pbs-tiny (default: %(default)s)")  # fmt: skip
    p.add_argument("--driver-name", default=DEFAULT_DRIVER_NAME,
                   help="the driver name in ResourceSlices and DeviceClasses (default: %(default)s)")  # fmt: skip
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help="where the devices' state directories live (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--host-state-dir",
        metavar="DIR",
        help="--state-dir as the node sees it, for the CDI mounts (default: --state-dir)",
    )
    p.add_argument("--plugin-dir", default=DEFAULT_PLUGIN_DIR, metavar="DIR",
                   help="the DRA socket and the prepared claims' checkpoint (default: %(default)s)")  # fmt: skip
    p.add_argument(
        "--registry-dir",
        default=DEFAULT_REGISTRY_DIR,
        metavar="DIR",
        help="the kubelet's plugin registration directory (default: %(default)s)",
    )
    p.add_argument("--cdi-dir", default=DEFAULT_CDI_DIR, metavar="DIR",
                   help="where prepared claims' CDI specs are written (default: %(default)s)")  # fmt: skip
    p.add_argument("--node-name", help="node name for the ResourceSlice and the stable device IDs "
                   "(default: $NODE_NAME, else the hostname)")  # fmt: skip
    p.add_argument("--health-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often device health is checked (default: %(default)s)")  # fmt: skip
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often the sockets are checked and the ResourceSlice republished if health "
                   "changed (default: %(default)s)")  # fmt: skip
    p.add_argument("--kubeconfig", help="outside a cluster: the kubeconfig to use (default: in-cluster)")
    p.set_defaults(func=_run, weight_memory_mib=None, matrix_units=None, clock_mhz=None)


def _api_client(args: argparse.Namespace) -> Any:
    from kubernetes import client, config

    if args.kubeconfig:
        return config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _run(args: argparse.Namespace) -> int:
    from fpgaserve.deviceplugin.health import HealthMonitor
    from fpgaserve.deviceplugin.state import DeviceStore
    from fpgaserve.dra.checkpoint import Checkpoint
    from fpgaserve.dra.kubeapi import KubeApi, claim_path
    from fpgaserve.dra.prepare import ClaimPreparer
    from fpgaserve.dra.publisher import SlicePublisher
    from fpgaserve.dra.server import DriverServer
    from fpgaserve.dra.service import DraService

    if args.device_count < 1:
        raise device_plugin._user_error("--device-count must be at least 1")
    if args.health_interval <= 0 or args.poll_interval <= 0:
        raise device_plugin._user_error("--health-interval and --poll-interval must be > 0")
    model = device_plugin._device_model(args)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    node_name = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    store = DeviceStore(Path(args.state_dir))
    devices = store.create(node_name=node_name, count=args.device_count, model=model)
    logger.info("%d %s device(s) on node %s", len(devices), model.name, node_name)
    api = KubeApi(_api_client(args))
    monitor = HealthMonitor(store=store, interval=args.health_interval)
    monitor.start()
    try:
        preparer = ClaimPreparer(
            driver=args.driver_name,
            node_name=node_name,
            read_claim=lambda ns, name: api.get(claim_path(ns, name), what=f"get ResourceClaim {ns}/{name}"),
            devices=lambda: monitor.check().devices,
            checkpoint=Checkpoint(Path(args.plugin_dir) / "checkpoint.json"),
            cdi_dir=Path(args.cdi_dir),
            host_state_dir=PurePosixPath(args.host_state_dir or args.state_dir),
        )
        DriverServer(
            driver=args.driver_name,
            dra=DraService(preparer=preparer),
            monitor=monitor,
            publisher=SlicePublisher(api=api, node_name=node_name, driver=args.driver_name),
            plugin_dir=Path(args.plugin_dir),
            registry_dir=Path(args.registry_dir),
            poll_interval=args.poll_interval,
        ).run(stop)
    finally:
        monitor.close()
        api.close()
    logger.info("DRA driver stopped")
    return 0
