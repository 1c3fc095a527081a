"""Benchmark of the operator against kmock's Kubernetes emulator.

It runs the real ``fpgaserve operator`` as a process (a kubeconfig points it at kmock, served by
this process) and measures, on this machine:

- latency: from creating one FpgaWebservice to its Deployment existing, p50 and p99 over
  ``--latency-samples`` web services created one after another;
- readiness: from a Deployment's status turning available (played here, as the Deployment
  controller would) to its FpgaWebservice's phase Ready, over the same web services; the resync
  is one hour, so this is the operator's watch of its Deployments (target: under 2 s);
- cold start: ``--cold-start`` web services created while the operator is down, then the time from
  starting it until every one has its Deployment, and until every status says so;
- the operator's peak memory (VmHWM), its resident memory once idle, and its CPU time during the
  cold start (kmock runs in this process and shares the machine with it).

    python bench/operator.py                       # 100 latency samples, 500 web services cold
    python bench/operator.py --cold-start 100 --json

kmock keeps every request and object version in memory, in this process; that is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kmock
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the emulator the operator tests use

from tests.operator.cluster import Cluster, declare_resources  # noqa: E402

NAMESPACE = "bench"
API = "/apis/fpgaserve.io/v1alpha1/namespaces/bench"
DIGEST = "ab" * 32


class TimedCluster(Cluster):
    """The emulator, noting when each Deployment is created, and remembering no request history.

    kmock matches every request against its whole request history (so that slices and counts of
    reactions work), which makes each request slower than the one before: quadratic over a run of
    thousands of requests. Here the history holds only the requests being served, which is all its
    matching needs: the benchmark measures the operator, not the emulator's bookkeeping.
    """

    deployed_at: dict[str, float]
    served: int
    serving: dict[int, kmock.Request]

    async def _handle(self, request: kmock.Request) -> Any:
        self.served += 1
        self.serving[id(request)] = request
        self._requests[:] = [r for r in self._requests if id(r) in self.serving]
        if request.action == kmock.action.CREATE and request.resource == "apps/v1/deployments":
            self.deployed_at.setdefault(request.data["metadata"]["name"], time.perf_counter())
        try:
            return await super()._handle(request)
        finally:
            del self.serving[id(request)]


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "bench"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


async def _start_operator(kubeconfig: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    # A long resync: the figures are about reacting to changes, not about periodic drift checks.
    command = [sys.executable, "-m", "fpgaserve.operator", "--namespace", NAMESPACE,
               "--resync-seconds", "3600", "--retry-seconds", "0.5"]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _until(probe: Any, timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


def _phase(cluster: Cluster, name: str) -> str | None:
    obj = cluster.objects[kmock.resource("fpgaserve.io/v1alpha1/fpgawebservices"), NAMESPACE, name]
    return None if obj.deleted else (obj.raw.get("status") or {}).get("phase")


async def _create_webservice(cluster: Cluster, name: str) -> None:
    body = {"apiVersion": "fpgaserve.io/v1alpha1", "kind": "FpgaWebservice",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"model": "model"}}  # fmt: skip
    response = await cluster.post(f"{API}/fpgawebservices", json=body)
    assert response.status == 200, await response.text()


async def _mark_available(cluster: Cluster, name: str) -> None:
    """Play the Deployment controller: its one pod is ready."""
    status = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}  # fmt: skip
    response = await cluster.patch(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return await _measure(args, Path(tmp))


async def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with TimedCluster() as cluster, kmock.Server(cluster):
        cluster.deployed_at, cluster.served, cluster.serving = {}, 0, {}
        declare_resources(cluster)
        kubeconfig = _kubeconfig(tmp / "config", str(cluster.url).rstrip("/"))
        model = {"apiVersion": "fpgaserve.io/v1alpha1", "kind": "FpgaModel",
                 "metadata": {"name": "model", "namespace": NAMESPACE},
                 "spec": {"source": {"uri": "s3://models/model/service_def.zip", "sha256": DIGEST}}}  # fmt: skip
        await cluster.post(f"{API}/fpgamodels", json=model)

        operator = await _start_operator(kubeconfig)
        try:
            await _until(
                lambda: (
                    (cluster.live("fpgaserve.io/v1alpha1/fpgamodels", NAMESPACE, "model") or {})
                    .get("status", {})
                    .get("phase")
                    == "Ready"
                ),
                60,
                "the model Ready",
            )
            result["idle_rss_mib"] = _memory_kib(operator.pid)["VmRSS"] / 1024
            latencies = []
            for i in range(args.latency_samples):
                name = f"latency-{i}"
                started = time.perf_counter()
                await _create_webservice(cluster, name)
                await _until(lambda n=name: n in cluster.deployed_at, 30, f"Deployment {name}")  # type: ignore[misc]
                latencies.append(cluster.deployed_at[name] - started)
            ordered = sorted(latencies)
            result["latency_p50_ms"] = statistics.median(ordered) * 1000
            result["latency_p99_ms"] = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000
            result["latency_samples"] = len(ordered)

            # Deployment ready -> FpgaWebservice Ready: the watch on Deployments (no resync).
            readiness = []
            for i in range(args.latency_samples):
                name = f"latency-{i}"
                await _until(lambda n=name: _phase(cluster, n) == "Deploying", 30, f"{name} deploying")  # type: ignore[misc]
                started = time.perf_counter()
                await _mark_available(cluster, name)
                await _until(lambda n=name: _phase(cluster, n) == "Ready", 30, f"{name} Ready")  # type: ignore[misc]
                readiness.append(time.perf_counter() - started)
            ordered = sorted(readiness)
            result["ready_p50_ms"] = statistics.median(ordered) * 1000
            result["ready_p99_ms"] = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000
            result["ready_max_ms"] = ordered[-1] * 1000
        finally:
            await _stop(operator)

        names = [f"cold-{i}" for i in range(args.cold_start)]
        for name in names:
            await _create_webservice(cluster, name)
        started = time.perf_counter()
        operator = await _start_operator(kubeconfig)
        try:
            await _until(lambda: all(n in cluster.deployed_at for n in names), 600, "every Deployment", 0.01)
            result["cold_start_deployments_s"] = max(cluster.deployed_at[n] for n in names) - started
            await _until(
                lambda: all(_phase(cluster, n) == "Deploying" for n in names), 600, "every status", 0.05
            )
            result["cold_start_status_s"] = time.perf_counter() - started
            result["cold_start_objects"] = len(names)
            result["peak_rss_mib"] = _memory_kib(operator.pid)["VmHWM"] / 1024
            result["cold_start_operator_cpu_s"] = _cpu_seconds(operator.pid)
            result["requests_served"] = cluster.served
        finally:
            await _stop(operator)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-samples", type=int, default=100, metavar="N")
    parser.add_argument(
        "--cold-start", type=int, default=500, metavar="N", help="web services (default: 500)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [
        ("create -> Deployment, p50", f"{result['latency_p50_ms']:.1f} ms (n={result['latency_samples']})"),
        ("create -> Deployment, p99", f"{result['latency_p99_ms']:.1f} ms"),
        ("Deployment ready -> FpgaWebservice Ready, p50", f"{result['ready_p50_ms']:.1f} ms (no resync: the watch)"),
        ("Deployment ready -> FpgaWebservice Ready, p99 / max", f"{result['ready_p99_ms']:.1f} ms / {result['ready_max_ms']:.1f} ms"),
        (f"cold start, {result['cold_start_objects']} web services: Deployments", f"{result['cold_start_deployments_s']:.1f} s"),
        (f"cold start, {result['cold_start_objects']} web services: statuses", f"{result['cold_start_status_s']:.1f} s"),
        ("operator CPU time during the cold start", f"{result['cold_start_operator_cpu_s']:.1f} s"),
        ("operator resident memory, idle", f"{result['idle_rss_mib']:.0f} MiB"),
        ("operator peak memory (VmHWM)", f"{result['peak_rss_mib']:.0f} MiB"),
        ("API requests served by kmock", str(result["requests_served"])),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
