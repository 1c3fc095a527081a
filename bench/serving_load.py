"""Load generation for ``bench/serving.py``: concurrent clients over HTTP and gRPC, and server probes.

Role: what the serving benchmark sends and reads, apart from what it starts and reports: ``load``
(``POST /score`` over keep-alive connections, as a user's client would), ``one_client`` and
``many_clients`` (that load with what the server's metrics and the CPU clocks say: the server's
handling outside ``predict``, its CPU per request, the load generator's share of the cores; it
runs on the same cores as the server), ``load_grpc`` (OIP
``ModelInfer`` with the image as ``raw_input_contents``, as tritonclient sends it), the server's
``/metrics`` and resident memory, and the small statistics helpers the rounds use.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "cpu_seconds",
    "load",
    "load_grpc",
    "many_clients",
    "one_client",
    "percentile",
    "rss_bytes",
    "score_seconds",
    "server_metrics",
    "timed",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def server_metrics(url: str) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def score_seconds(url: str) -> float:
    """The server's summed handling time of answered ``POST /score`` requests (its own clock)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fpgaserve_request_duration_seconds_sum"
        and s.labels.get("route") == "/score"
        and s.labels.get("status") == "200"
    )


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of process ``pid``, or of this process."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def load(url: str, image: bytes, *, clients: int, requests: int) -> dict[str, Any]:
    """``requests`` POST /score spread over ``clients`` concurrent keep-alive connections."""
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    remaining = requests
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                async with session.post(
                    f"{url}/score", data=image, headers={"Content-Type": "image/jpeg"}
                ) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    errors.append(f"{response.status} {body[:100]!r}")

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return _summary(latencies, elapsed, errors)


def one_client(url: str, image: bytes, requests: int) -> tuple[dict[str, Any], float]:
    """One client's load, and the server's mean time per request outside ``predict`` (its handling:
    HTTP, checks, batcher, encoding; from its own metrics). The rest of the gap to in-process is
    the client, the loopback and the thread wake-ups that no handler timer sees."""
    handled, busy = score_seconds(url), server_metrics(url)["fpgaserve_batch_duration_seconds_sum"]
    one = asyncio.run(load(url, image, clients=1, requests=requests))
    busy = server_metrics(url)["fpgaserve_batch_duration_seconds_sum"] - busy
    return one, (score_seconds(url) - handled - busy) / one["requests"]


def many_clients(
    url: str, image: bytes, *, pid: int, clients: int, requests: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """The concurrent clients' load, the server's CPU per request, and the share of the machine's
    cores the load generator (this process) took meanwhile: it runs on the same cores."""
    server, client, start = cpu_seconds(pid), cpu_seconds(), time.perf_counter()
    many = asyncio.run(load(url, image, clients=clients, requests=requests))
    wall, client = time.perf_counter() - start, cpu_seconds() - client
    cpu = {
        "server": (cpu_seconds(pid) - server) / many["requests"],
        "client_cores": client / wall / (os.cpu_count() or 1),
    }
    return many, cpu


async def load_grpc(
    target: str, image: bytes, *, input_name: str, clients: int, requests: int
) -> dict[str, Any]:
    """``requests`` OIP ``ModelInfer`` calls spread over ``clients`` concurrent channels."""
    import struct

    import grpc

    from fpgaserve.server.grpc_messages import oip

    request = oip("ModelInferRequest")(model_name="")
    request.inputs.add(name=input_name, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
    latencies: list[float] = []
    errors: list[str] = []
    remaining = requests
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    try:

        async def client(channel: Any) -> None:
            nonlocal remaining
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=oip("ModelInferRequest").SerializeToString,
                response_deserializer=oip("ModelInferResponse").FromString,
            )
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    await infer(request, timeout=120)
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{exc.code().name} {exc.details()}")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(grpc.aio.Channel.channel_ready(c) for c in channels))
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in channels))
        elapsed = time.perf_counter() - start
    finally:
        for channel in channels:
            await channel.close()
    return _summary(latencies, elapsed, errors)


def _summary(latencies: list[float], elapsed: float, errors: list[str]) -> dict[str, Any]:
    """What a load run reports: requests answered, their rate, latency percentiles and errors."""
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "errors": errors,
    }
