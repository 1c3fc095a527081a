"""Play the ReplicaSet controller, the scheduler and the kubelet for one web service on kmock.

``start_pod`` creates a pod from the operator's Deployment template (as the ReplicaSet controller
would), schedules it against one node with ``node_fpgas`` FPGAs (the scheduler's Unschedulable
condition and message when they do not suffice), and otherwise runs its storage-init container
for real, as a local process with the generated argv (container paths mapped onto directories,
``/dev/termination-log`` onto a file), then reports the container's exit code and termination
message in the pod's status as the kubelet does (FallbackToLogsOnError: the log tail when the
container wrote no message).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE
from tests.operator.local_pod import _argv

__all__ = ["start_pod"]

PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


async def _patch_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    response = await cluster.patch(
        f"{PODS}/{name}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()


def _env(container: dict[str, Any], cluster: Cluster) -> dict[str, str]:
    """The container's env as the kubelet resolves it: values, and keys of Secrets (base64 data)."""
    env = dict(os.environ)
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            secret = cluster.live("v1/secrets", NAMESPACE, ref["name"])
            assert secret is not None, f"the pod needs Secret {ref['name']}"
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def _run_init(
    init: dict[str, Any], volumes: dict[str, dict[str, Any]], tmp: Path, env: dict[str, str]
) -> tuple[int, str]:
    mounts: dict[str, Path] = {}
    for mount in init["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            mounts[mount["mountPath"]] = Path(volume["hostPath"]["path"])
        else:  # emptyDirs (secrets are not needed by the sources these tests use)
            where = tmp / mount["name"]
            where.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = where
    termination_log = tmp / "termination-log"
    termination_log.touch()  # the kubelet mounts an empty file there
    mounts[init["terminationMessagePath"]] = termination_log
    done = subprocess.run(
        _argv(init, mounts), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    message = termination_log.read_text().strip()
    if (
        not message
        and done.returncode != 0
        and init.get("terminationMessagePolicy") == "FallbackToLogsOnError"
    ):
        message = "\n".join(done.stderr.strip().splitlines()[-80:])[-2048:]
    return done.returncode, message


async def start_pod(cluster: Cluster, *, webservice: str, node_fpgas: int, tmp: Path) -> str:
    """Create, schedule and start one pod of the web service's Deployment; its name."""
    deployment = cluster.live("apps/v1/deployments", NAMESPACE, webservice)
    assert deployment is not None, "no Deployment yet"
    template = deployment["spec"]["template"]
    name = f"{webservice}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(template["metadata"]["labels"])},
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }
    response = await cluster.post(PODS, json=pod)
    assert response.status == 200, await response.text()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    wanted = sum(
        int((c.get("resources") or {}).get("limits", {}).get(DEFAULT_RESOURCE_NAME, 0))
        for c in template["spec"]["containers"]
    )
    if wanted > node_fpgas:
        message = (
            f"0/1 nodes are available: 1 Insufficient {DEFAULT_RESOURCE_NAME}. preemption: 0/1 nodes are "
            "available: 1 No preemption victims found for incoming pod."
        )
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                     "lastTransitionTime": now}  # fmt: skip
        await _patch_status(cluster, name, {"conditions": [condition]})
        return name
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
    (init,) = template["spec"]["initContainers"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    exit_code, message = await asyncio.to_thread(_run_init, init, volumes, tmp / name, _env(init, cluster))
    if exit_code == 0:
        state: dict[str, Any] = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    else:
        state = {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}}
    status = {
        "phase": "Pending",
        "conditions": [scheduled],
        "initContainerStatuses": [
            {"name": init["name"], "image": init["image"], "ready": False, "restartCount": 0, "state": state}
        ],
    }
    await _patch_status(cluster, name, status)
    return name
