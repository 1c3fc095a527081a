"""``fpgaserve dra-driver`` as a process: it publishes the slice through a kubeconfig, registers with
the fake kubelet, prepares a claim, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from fpgaserve.api.constants import DRA_DRIVER_NAME
from fpgaserve.cli import dra_driver
from fpgaserve.dra.manifest import CDI_DIR, PLUGIN_DIR, STATE_DIR
from fpgaserve.dra.pluginregistration import DEFAULT_REGISTRY_DIR
from fpgaserve.dra.slices import slice_name
from fpgaserve.dra.v1 import api_pb2
from tests.operator.cluster import Cluster
from tests.support.polling import eventually

from .conftest import NAMESPACE, FakeKubelet, claim_body, create_claim


def test_parser_defaults_agree_with_the_library() -> None:
    assert dra_driver.DEFAULT_DRIVER_NAME == DRA_DRIVER_NAME
    assert (dra_driver.DEFAULT_PLUGIN_DIR, dra_driver.DEFAULT_STATE_DIR) == (PLUGIN_DIR, STATE_DIR)
    assert (dra_driver.DEFAULT_REGISTRY_DIR, dra_driver.DEFAULT_CDI_DIR) == (DEFAULT_REGISTRY_DIR, CDI_DIR)


async def test_the_command_serves_a_node(dirs: Path, cluster: Cluster, kubelet: FakeKubelet) -> None:
    kubeconfig = dirs / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "kmock", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "dra-driver", "--device-count=1", "--device-model=pbs-tiny",
            "--node-name=node-a", f"--kubeconfig={kubeconfig}", f"--state-dir={dirs / 'state'}",
            f"--plugin-dir={dirs / 'plugin'}", f"--registry-dir={dirs / 'registry'}", f"--cdi-dir={dirs / 'cdi'}",
            "--health-interval=0.1", "--poll-interval=0.1"]  # fmt: skip
    log = (dirs / "driver.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        name = slice_name(node_name="node-a", driver=DRA_DRIVER_NAME)
        live = await eventually(
            lambda: process.poll() is None and cluster.live("resource.k8s.io/v1/resourceslices", None, name),
            what="the driver's ResourceSlice",
        )
        (device,) = live["spec"]["devices"]  # type: ignore[index]
        stub = await asyncio.to_thread(kubelet.register)
        claim = await create_claim(cluster, claim_body(name="c1", devices=[device["name"]]))
        ref = api_pb2.Claim(namespace=NAMESPACE, name="c1", uid=claim["metadata"]["uid"])
        request = api_pb2.NodePrepareResourcesRequest(claims=[ref])
        response = await asyncio.to_thread(stub.NodePrepareResources, request, timeout=10)
        assert response.claims[ref.uid].error == ""
        checkpoint = json.loads((dirs / "plugin" / "checkpoint.json").read_text())
        assert list(checkpoint["claims"]) == [ref.uid]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert not (dirs / "registry" / f"{DRA_DRIVER_NAME}-reg.sock").exists()
