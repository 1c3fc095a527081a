"""The emulated cluster the SDK and CLI are tested against.

kmock's API server and the real operator (``tests/operator/conftest.py``), an S3-compatible store
(moto's server mode on a loopback port), a workspace directory with a kubeconfig and a
``.fpgaserve/config.json`` pointing at both, and ``Kubelet``: a task that does what the kubelet
and the Deployment controller would for the Deployments the operator writes: it runs each pod
template as local processes (``tests/operator/local_pod.py``: storage-init downloads from the S3
server, the server starts with an emulated FPGA), publishes a Pod with its Ready condition and the
Deployment's status, and collects garbage (owned objects of deleted owners). kmock cannot
port-forward, so the SDK reaches the local pod through ``DirectAddress`` (passed explicitly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from fpgaserve.sdk.cluster.connect import DirectAddress
from fpgaserve.sdk.cluster.store import PackageStore
from tests.operator.cluster import Cluster
from tests.operator.conftest import cluster, config, kube, operators, start_operator  # noqa: F401 (fixtures)
from tests.operator.helpers import NAMESPACE
from tests.operator.local_pod import InitFailed, LocalPod
from tests.support.net import free_port
from tests.support.polling import wait_until

T = TypeVar("T")
BUCKET = "fpgaserve-packages"
ACCESS_KEY, SECRET_KEY = "AKIAFPGASERVETEST", "fpgaserve-test-secret-key"


@pytest.fixture
def s3_store() -> Iterator[PackageStore]:
    """A real S3-compatible HTTP server (moto) on loopback, with an empty bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    store = PackageStore(bucket=BUCKET, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                         endpoint=f"http://127.0.0.1:{port}")  # fmt: skip
    try:
        wait_until(lambda: _try(store.create_bucket), what="the S3 server to start")
        yield store
    finally:
        server.stop()


def _try(action: Any) -> bool:
    try:
        action()
    except Exception:
        return False
    return True


@pytest.fixture
def workspace_dir(tmp_path: Path, cluster: Cluster, s3_store: PackageStore) -> Path:  # noqa: F811
    """A directory whose ``.fpgaserve/config.json`` names the kmock cluster and the S3 store."""
    home = tmp_path / "home"
    (home / ".fpgaserve").mkdir(parents=True)
    server = str(cluster.url).rstrip("/")
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE}}],
    }  # fmt: skip
    (home / ".fpgaserve" / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    config_file = {
        "name": "emulated-lab",
        "kubeconfig": "kubeconfig",
        "store": {"endpoint": s3_store.endpoint, "bucket": BUCKET,
                  "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY},
    }  # fmt: skip
    (home / ".fpgaserve" / "config.json").write_text(json.dumps(config_file))
    return home


@dataclass
class Kubelet:
    """Runs the pods of the operator's Deployments locally (one pod per Deployment)."""

    cluster: Cluster
    workdir: Path
    host_port: int = field(default_factory=free_port)
    pods: dict[str, LocalPod] = field(default_factory=dict)
    init_failures: dict[str, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def guard(self, work: Awaitable[T], *, timeout: float) -> T:
        """``work``'s result; fails at once when the kubelet emulation fails first."""
        assert self.task is not None
        return await guarded(self.task, work, timeout=timeout)

    @property
    def connector(self) -> DirectAddress:
        """How the SDK reaches the pod: its container port is published on ``host_port`` here."""
        return DirectAddress("127.0.0.1", self.host_port)

    async def run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:  # reported by the tests (a background task's failure is silent)
            self.errors.append(exc)
            raise

    async def _loop(self) -> None:
        while True:
            await self.cluster.collect_garbage()
            live = {
                key[2]: obj.raw
                for key, obj in self.cluster.objects.items()
                if key[0].plural == "deployments" and key[1] == NAMESPACE and not obj.deleted
            }
            for name in list(self.pods):
                if name not in live:
                    pod = self.pods.pop(name)
                    await asyncio.to_thread(pod.stop)
                    await self.cluster.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}-local")
            for name, deployment in live.items():
                if name not in self.pods and name not in self.init_failures:
                    await self._start(name, deployment)
            await asyncio.sleep(0.1)

    async def _start(self, name: str, deployment: dict[str, Any]) -> None:
        template = deployment["spec"]["template"]
        secrets = {
            key[2]: obj.raw
            for key, obj in self.cluster.objects.items()
            if key[0].plural == "secrets" and key[1] == NAMESPACE and not obj.deleted
        }
        wanted = {v["secret"]["secretName"] for v in template["spec"].get("volumes", []) if "secret" in v}
        if not wanted <= set(secrets):
            return  # as the kubelet: the pod waits in ContainerCreating until its Secrets exist
        pod = LocalPod(template["spec"], secrets, self.workdir / name, host_port=self.host_port)
        try:
            await asyncio.to_thread(pod.run_init)
        except InitFailed as exc:
            self.init_failures[name] = exc.message
            return
        await asyncio.to_thread(pod.start_server)
        self.pods[name] = pod
        server_name = f"{name}.{NAMESPACE}.svc"
        while not await asyncio.to_thread(pod.ready, server_name=server_name):
            await asyncio.sleep(0.2)
        ready = [{"type": "Ready", "status": "True"}]
        await self.cluster.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-local", "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
            "spec": template["spec"], "status": {"phase": "Running", "conditions": ready},
        })  # fmt: skip
        available = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
        await self.cluster.patch(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status",
            json={
                "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "conditions": available}
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )


async def guarded(kubelet_task: asyncio.Task[None], work: Awaitable[T], *, timeout: float) -> T:
    """Await ``work``, failing at once with the kubelet's error if it stops first."""
    job = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({job, kubelet_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if job in done:
        return job.result()
    job.cancel()
    if kubelet_task in done:
        raise AssertionError(f"the kubelet emulation failed: {kubelet_task.exception()!r}")
    raise AssertionError(f"not done within {timeout:g} s")


@pytest.fixture
async def kubelet(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Kubelet]:  # noqa: F811
    runner = Kubelet(cluster=cluster, workdir=tmp_path / "pods")
    task = asyncio.create_task(runner.run())
    runner.task = task
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for pod in runner.pods.values():
            await asyncio.to_thread(pod.stop)
