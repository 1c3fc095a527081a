"""Why a web service does not come up, reported by the real operator within moments (issue 11).

The operator runs against kmock with a one-hour resync, so that everything here happens through
its watches of the Deployment and the pods, never through the timer. ``tests/operator/kubelet.py``
plays the scheduler and the kubelet: storage-init runs for real (a wrong sha256, an unreachable
source), and a pod asking for more FPGAs than the node has is unschedulable.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from fpgaserve.api.conditions import STORAGE_INIT_FAILED, UNSCHEDULABLE
from fpgaserve.api.kinds import DEPLOYMENT, FPGAWEBSERVICE, SERVICE
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NAMESPACE, create, events_for, model_body, webservice_body
from tests.operator.kubelet import start_pod
from tests.operator.test_handlers import MODELS, WS, condition, mark_available, status
from tests.support.polling import eventually


@pytest.fixture
def config() -> OperatorConfig:
    # No resync within a test: only the watches can make the operator react.
    return OperatorConfig(
        image="registry.example/fpgaserve:test", resync_seconds=3600, retry_seconds=0.2, max_retry_seconds=1.0
    )


def ready(cluster: Cluster) -> dict[str, Any]:
    return condition(cluster, WS, "web", "Ready")


async def failed_with(cluster: Cluster, reason: str) -> dict[str, Any]:
    """Wait for phase Failed with this reason, and its Warning Event; the Ready condition."""
    await eventually(
        lambda: (
            status(cluster, WS, "web").get("phase") == "Failed" and ready(cluster).get("reason") == reason
        ),
        what=f"Failed with {reason}",
    )
    await eventually(
        lambda: any(t == "Warning" and r == reason for t, r, _ in events_for(cluster, "web")),
        what=f"a Warning Event {reason}",
    )
    found = ready(cluster)
    assert found["status"] == "False"
    return found


async def deploy(cluster: Cluster, source: dict[str, Any], **spec: Any) -> None:
    await create(cluster, model_body(source=source))
    await create(cluster, webservice_body(**spec))
    await eventually(lambda: status(cluster, WS, "web").get("phase") == "Deploying", what="deploying")


async def test_wrong_sha256_is_storage_init_failed(
    cluster: Cluster, start_operator: StartOperator, tmp_path: Path
) -> None:
    package = tmp_path / "node" / "service_def.zip"
    package.parent.mkdir()
    package.write_bytes(b"PK\x03\x04 not the registered package")
    async with start_operator():
        await deploy(cluster, {"uri": package.as_uri(), "sha256": "0" * 64}, fpga={"count": 0})
        pod = await start_pod(cluster, webservice="web", node_fpgas=0, tmp=tmp_path / "pods")
        found = await failed_with(cluster, STORAGE_INIT_FAILED)
        assert f"pod {pod}: storage-init failed: exit code 2" in found["message"]
        assert "sha256 mismatch: expected " + "0" * 64 in found["message"]


async def test_unreachable_source_is_storage_init_failed(
    cluster: Cluster, start_operator: StartOperator, tmp_path: Path
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    uri = f"http://127.0.0.1:{port}/models/service_def.zip?X-Amz-Signature=presigned-secret"
    async with start_operator():
        await deploy(cluster, {"uri": uri, "sha256": "a" * 64}, fpga={"count": 0})
        await start_pod(cluster, webservice="web", node_fpgas=0, tmp=tmp_path / "pods")
        found = await failed_with(cluster, STORAGE_INIT_FAILED)
        assert "cannot connect" in found["message"]
        assert "presigned-secret" not in str(cluster.live(WS, NAMESPACE, "web"))
        assert not any("presigned-secret" in m for _, _, m in events_for(cluster, "web"))


async def test_unschedulable_then_recovered(
    cluster: Cluster, kube: Kube, start_operator: StartOperator, tmp_path: Path
) -> None:
    async with start_operator():
        await deploy(cluster, {"uri": "s3://models/r.zip", "sha256": "b" * 64}, fpga={"count": 2})
        pod = await start_pod(cluster, webservice="web", node_fpgas=1, tmp=tmp_path / "pods")
        found = await failed_with(cluster, UNSCHEDULABLE)
        assert found["message"].startswith(
            f"pod {pod}: 0/1 nodes are available: 1 Insufficient fpgaserve.io/fpga"
        )
        # A node with FPGAs joins: the pod is scheduled and starts; the failure clears.
        await cluster.patch(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/status",
            json={"status": {"conditions": [{"type": "PodScheduled", "status": "True"}], "phase": "Running"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await eventually(
            lambda: status(cluster, WS, "web").get("phase") == "Deploying", what="deploying again"
        )
        await mark_available(kube)
        await eventually(lambda: status(cluster, WS, "web").get("phase") == "Ready", what="ready")
        assert ready(cluster)["status"] == "True"
        await eventually(  # Events are posted in the background: wait for the recovery's
            lambda: (
                [r for _, r, _ in events_for(cluster, "web") if r in (UNSCHEDULABLE, "Ready")][-2:]
                == [UNSCHEDULABLE, "Ready"]
            ),
            what="an Event for the failure, then one for the recovery",
        )


async def test_owned_objects_restored_without_a_resync(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    async with start_operator():
        await deploy(cluster, {"uri": "s3://models/r.zip", "sha256": "c" * 64})
        await kube.delete(SERVICE, NAMESPACE, "web")
        await kube.patch(DEPLOYMENT, NAMESPACE, "web", {"spec": {"replicas": 5}})
        await eventually(lambda: cluster.live("v1/services", NAMESPACE, "web"), what="Service restored")
        await eventually(
            lambda: (cluster.live("apps/v1/deployments", NAMESPACE, "web") or {})["spec"]["replicas"] == 1,
            what="replicas restored",
        )
        # The Deployment's readiness reaches the status through the watch as well.
        await mark_available(kube)
        await eventually(lambda: status(cluster, WS, "web").get("phase") == "Ready", what="ready")


async def test_model_used_by_follows_without_a_resync(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    def used_by(model: str) -> Any:
        return status(cluster, MODELS, model).get("usedBy")

    async with start_operator():
        await deploy(cluster, {"uri": "s3://models/r.zip", "sha256": "d" * 64})
        await eventually(lambda: used_by("resnet") == ["web"], what="usedBy [web]")
        await create(
            cluster, model_body(name="other", source={"uri": "s3://models/o.zip", "sha256": "e" * 64})
        )
        await eventually(lambda: status(cluster, MODELS, "other").get("phase") == "Ready", what="other ready")
        await kube.patch(FPGAWEBSERVICE, NAMESPACE, "web", {"spec": {"model": "other"}})
        await eventually(lambda: used_by("resnet") == [] and used_by("other") == ["web"], what="moved")
        await kube.delete(FPGAWEBSERVICE, NAMESPACE, "web")
        await eventually(lambda: used_by("other") == [], what="usedBy [] once deleted")
