"""Webservice against kmock without a running operator: the status the operator writes is set here
as the operator does (phase, Ready condition with a reason), to test what the SDK reads from it:
``wait_for_deployment`` raising with the reason and the log tail, ``state``, ``error``, specs
built through the CRD models, keys, and the real port-forward path up to the API server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from fpgaserve.api.certs import self_signed_certificate
from fpgaserve.api.crd_models import API_VERSION
from fpgaserve.sdk.cluster.connect import PortForward
from fpgaserve.sdk.cluster.flavours import AksWebservice, BrainwaveImage, BrainwaveWebservice
from fpgaserve.sdk.cluster.model import Model
from fpgaserve.sdk.cluster.webservice import Webservice
from fpgaserve.sdk.cluster.workspace import Workspace
from fpgaserve.sdk.exceptions import ModelInUseException, WebserviceException
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE, create, model_body
from tests.support.polling import eventually

WS_PATH = f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/fpgawebservices"


async def _deployed(cluster: Cluster, workspace_dir: Path, **config: Any) -> tuple[Workspace, Webservice]:
    await create(cluster, model_body("resnet"))
    ws = Workspace.from_config(workspace_dir)
    model = await asyncio.to_thread(Model, ws, "resnet")
    service = await asyncio.to_thread(
        Webservice.deploy_from_model, ws, "web", [model], BrainwaveImage.image_configuration(),
        BrainwaveWebservice.deploy_configuration(**config),
    )  # fmt: skip
    return ws, service


async def _operator_says(cluster: Cluster, name: str, *, phase: str, reason: str, message: str) -> None:
    """Patch the status as the operator does (observedGeneration current, Ready condition)."""
    live = cluster.live(f"{API_VERSION}/fpgawebservices", NAMESPACE, name)
    assert live is not None
    ready = {
        "type": "Ready",
        "status": "True" if phase == "Ready" else "False",
        "reason": reason,
        "message": message,
    }
    status = {"phase": phase, "observedGeneration": live["metadata"]["generation"], "conditions": [ready]}
    response = await cluster.patch(f"{WS_PATH}/{name}/status", json={"status": status},
                                   headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert response.status == 200


@pytest.mark.parametrize(
    ("reason", "message", "init"),
    [
        ("StorageInitFailed", "sha256 of the package is 3b1f..., expected 0123...", True),
        ("StorageInitFailed", "s3://fpgaserve-packages/p: unreachable: ConnectionRefusedError", True),
        ("Unschedulable", "0/1 nodes are available: 1 Insufficient fpgaserve.io/fpga", False),
    ],
)
async def test_wait_for_deployment_raises_with_the_reason_and_log_tail(
    cluster: Cluster, workspace_dir: Path, reason: str, message: str, init: bool
) -> None:
    _, service = await _deployed(cluster, workspace_dir)
    assert service.spec.tls.mode == "SelfSigned" and service.spec.fpga.count == 1
    await cluster.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json={
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-abc", "namespace": NAMESPACE, "labels": {"fpgaserve.io/webservice": "web"}},
    })  # fmt: skip
    container = "storage-init" if init else "server"
    log_path = f"/api/v1/namespaces/{NAMESPACE}/pods/web-abc/log"
    cluster["get", log_path, {"container": container}] << f"line 1\nerror: {message}\n".encode()
    await _operator_says(cluster, "web", phase="Failed", reason=reason, message=message)
    printed: list[str] = []
    with pytest.raises(WebserviceException) as caught:
        await asyncio.to_thread(service.wait_for_deployment, True, 60, printer=printed.append)
    assert caught.value.reason == reason
    assert message in str(caught.value)
    if init:
        assert f"error: {message}" in caught.value.logs
    assert any(f"Ready=False {reason}" in line for line in printed)
    assert service.state == "Failed" and service.error == f"{reason}: {message}"


async def test_wait_for_deployment_returns_when_ready_and_times_out_otherwise(
    cluster: Cluster, workspace_dir: Path
) -> None:
    _, service = await _deployed(cluster, workspace_dir)
    with pytest.raises(WebserviceException, match=r"not Ready after 0\.5 s"):
        await asyncio.to_thread(service.wait_for_deployment, False, 0.5)
    await _operator_says(cluster, "web", phase="Ready", reason="Ready", message="")
    await asyncio.to_thread(service.wait_for_deployment, False, 30)
    assert service.state == "Ready" and service.error is None


async def test_specs_are_built_through_the_crd_models(
    cluster: Cluster, workspace_dir: Path, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(["web.ns1.svc"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    ws, service = await _deployed(
        cluster, workspace_dir, num_replicas=2, autoscale_enabled=True, autoscale_max_replicas=5, fpga_count=2,
        ssl_cert_pem_file=str(tmp_path / "c.pem"), ssl_key_pem_file=str(tmp_path / "k.pem"), auth_enabled=False,
        ingress_host="infer.example.com",
    )  # fmt: skip
    spec = service.spec
    model = await asyncio.to_thread(Model, ws, "resnet")
    assert spec.tls.mode == "Secret" and spec.tls.secret_name == "web-user-tls"
    assert spec.autoscale is not None and spec.autoscale.max_replicas == 5
    assert (spec.fpga.count, spec.auth.enabled, spec.ingress and spec.ingress.host) == (
        2,
        False,
        "infer.example.com",
    )
    secret = cluster.live("v1/secrets", NAMESPACE, "web-user-tls")
    assert secret is not None and base64.b64decode(secret["data"]["tls.crt"]) == cert
    with pytest.raises(WebserviceException, match="exists; pass overwrite=True"):
        await asyncio.to_thread(Webservice.deploy_from_model, ws, "web", [model])
    aks = AksWebservice.deploy_configuration(cpu_cores=0.5, memory_gb=1.5, ssl_enabled=False)
    replaced = await asyncio.to_thread(Webservice.deploy_from_model, ws, "web", [model], None, aks, True)
    assert (
        replaced.spec.tls.mode == "Disabled"
        and replaced.spec.autoscale is None
        and replaced.spec.ingress is None
    )
    assert (replaced.spec.resources.cpu, replaced.spec.resources.memory) == ("0.5", "1536Mi")
    with pytest.raises(WebserviceException, match="invalid deployment configuration"):
        await asyncio.to_thread(
            Webservice.deploy_from_model,
            ws,
            "web2",
            [model],
            None,
            BrainwaveWebservice.deploy_configuration(fpga_count=99),
        )
    with pytest.raises(WebserviceException, match="not found"):
        await asyncio.to_thread(Webservice, ws, "absent")
    assert [s.name for s in await asyncio.to_thread(Webservice.list, ws, model_name="resnet")] == ["web"]
    # A model in use cannot be deleted.
    with pytest.raises(ModelInUseException, match="used by web service"):
        await asyncio.to_thread(model.delete)


async def test_keys_from_the_secret_and_set_key(cluster: Cluster, workspace_dir: Path) -> None:
    _, service = await _deployed(cluster, workspace_dir)
    keys = {"primaryKey": "p" * 20, "secondaryKey": "s" * 20}
    await cluster.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-keys", "namespace": NAMESPACE},
        "data": {"keys.json": base64.b64encode(json.dumps(keys).encode()).decode()},
    })  # fmt: skip
    assert await asyncio.to_thread(service.get_keys) == ("p" * 20, "s" * 20)
    await asyncio.to_thread(service.regen_key, "Secondary", "n" * 24)
    assert await asyncio.to_thread(service.get_keys) == ("p" * 20, "n" * 24)
    with pytest.raises(WebserviceException, match="'Primary' or 'Secondary'"):
        await asyncio.to_thread(service.regen_key, "Tertiary")


async def test_port_forward_asks_the_api_server_for_the_pod(
    cluster: Cluster, workspace_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """kmock speaks no port-forward protocol: the forward is refused, the local connection closes,
    and the API server was asked for the pod's port-forward on the right port."""
    ws = Workspace.from_config(workspace_dir)

    def attempt() -> bytes:
        with (
            PortForward().connect(
                api_client=ws.api_client, namespace=NAMESPACE, pod="web-abc", port=8443
            ) as (
                host,
                port,
            ),
            socket.create_connection((host, port), timeout=30) as conn,
        ):
            return conn.recv(10)

    with caplog.at_level(logging.WARNING):
        assert await asyncio.to_thread(attempt) == b""
    await eventually(
        lambda: any(r.url.path.endswith("/pods/web-abc/portforward") for r in cluster),
        what="a portforward request",
    )
    assert any("port-forward to ns1/web-abc:8443 failed" in r.getMessage() for r in caplog.records)
