"""Benchmark of the inference server against the same runtime called in-process.

It measures, on this machine:

- in-process: ``runtime.predict`` p50 at batch 1, and the best throughput over batch sizes;
- the server (a real ``fpgaserve serve`` process on loopback): one client's ``POST /score`` p50
  (target: <= 1.15x in-process), 16 concurrent clients' throughput (target: >= 90 % of the best
  in-process batched throughput), p50/p99, errors (target: none), and the server's resident memory
  after start-up and after 1,000 requests;
- the same server's gRPC port, side by side in the same rounds: one client's OIP ``ModelInfer``
  p50 and 16 clients' throughput (grpc.aio channels, the image as ``raw_input_contents`` as
  tritonclient sends it), each against in-process and against HTTP (target: no worse than HTTP).

    python bench/serving.py                            # fake runtime with a realistic cost (default)
    python bench/serving.py --item-cost-ms 1 --batch-cost-ms 1    # a fast model: server overhead shows
    python bench/serving.py --model-dir /path/service_def.zip     # a real package (fpgaserve serve)

Without ``--model-dir`` the runtime is ``fpgaserve.server.testing.FakeRuntime``: it decodes the
JPEG, then does a fixed amount of CPU work (GEMMs) per batch and per input, by default the emulated
EfficientNet-Lite0's cost before the executor's speed-ups (~31 ms per input, linear in the batch;
about 15 ms today: ``--item-cost-ms 15``; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fpgaserve.npu  # noqa: F401  (threading defaults before numpy loads)

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (https?://[^\s]+)")
GRPC_LISTENING = re.compile(r"listening for gRPC on ([^\s]+)")


def _fake_options(args: argparse.Namespace) -> dict[str, Any]:
    from fpgaserve.server.testing import gemms_per_second_here

    return {
        "classes": 1000,
        "batch_cost_s": args.batch_cost_ms / 1000,
        "item_cost_s": args.item_cost_ms / 1000,
        "cost": "spin",
        # Measured once here and given to the server too: both runtimes do exactly the same work.
        "gemms_per_second": gemms_per_second_here(),
    }


def _runtime(args: argparse.Namespace) -> Any:
    if args.model_dir:
        from fpgaserve.runtime.pipeline import load_pipeline

        return load_pipeline(Path(args.model_dir))
    from fpgaserve.server.testing import FakeRuntime

    return FakeRuntime(**_fake_options(args))


def _image(args: argparse.Namespace) -> bytes:
    if args.image:
        return Path(args.image).read_bytes()
    import skimage.data

    from fpgaserve.server.testing import encode_jpeg

    return encode_jpeg(skimage.data.chelsea())  # a real 451x300 photo, ~35 KB as JPEG


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _timed(fn: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def batch_sweep(runtime: Any, image: bytes, *, max_batch: int) -> dict[int, float]:
    """In-process inputs per second at batch 1, 2, 4, ... ``max_batch`` (median of 3)."""
    runtime.predict([image])  # warm
    sweep: dict[int, float] = {}
    batch = 1
    while batch <= max_batch:
        inputs = [image] * batch
        sweep[batch] = batch / statistics.median(_timed(functools.partial(runtime.predict, inputs), 3))
        batch *= 2
    return sweep


def _server_argv(args: argparse.Namespace) -> list[str]:
    options = [
        "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0",
        "--max-batch-size", str(args.max_batch_size),
        "--max-batch-delay-ms", str(args.max_batch_delay_ms),
        "--max-queue", str(4 * args.clients),
    ]  # fmt: skip
    if args.model_dir:
        return [sys.executable, "-m", "fpgaserve.cli.main", "serve", args.model_dir, *options]
    return [sys.executable, __file__, "--serve-fake", json.dumps(_fake_options(args)), *options]


def _serve_fake(options: dict[str, Any], argv: list[str]) -> int:
    """Child process: ``fpgaserve serve``'s own parser and server, over the fake runtime."""
    import logging

    from fpgaserve.cli.main import build_parser
    from fpgaserve.cli.serve import settings_from_args
    from fpgaserve.server.server_main import run
    from fpgaserve.server.testing import FakeRuntime

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(build_parser().parse_args(["serve", "fake", *argv]))
    return run(runtime=FakeRuntime(**options), settings=settings)


def _server_metrics(url: str) -> dict[str, float]:
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


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _load(url: str, image: bytes, *, clients: int, requests: int) -> dict[str, Any]:
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
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": _percentile(latencies, 50),
        "p99": _percentile(latencies, 99),
        "errors": errors,
    }


async def _load_grpc(
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
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": _percentile(latencies, 50),
        "p99": _percentile(latencies, 99),
        "errors": errors,
    }


def _start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(_server_argv(args), stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    deadline = time.monotonic() + 600
    grpc_target = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        grpc_match = GRPC_LISTENING.search(line)
        if grpc_match:
            grpc_target = grpc_match.group(1)
        match = LISTENING.search(line)
        if match and grpc_target:
            return proc, match.group(1), grpc_target
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stderr.read()}")


def _wait_ready(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server never became ready")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds that interleave in-process and server measurements; ratios are medians over rounds.

    Interleaving keeps a busy neighbour on a shared machine from skewing one side of a ratio.
    """
    image = _image(args)
    runtime = _runtime(args)
    input_name = runtime.input_spec.name  # the package's own input name (the fake's is "image")
    # Every batch size up to 16 (and the server's maximum): the best is the bar, whatever the server uses.
    sweep = batch_sweep(runtime, image, max_batch=max(16, args.max_batch_size))
    best_batch = max(sweep, key=lambda b: sweep[b])
    proc, url, grpc_target = _start_server(args)
    rounds: list[dict[str, Any]] = []
    try:
        _wait_ready(url)
        rss_start = _rss_bytes(proc.pid)
        sent = 0
        for _ in range(args.rounds):
            local_p50 = statistics.median(_timed(lambda: runtime.predict([image]), args.repeats))
            local_best = best_batch / statistics.median(
                _timed(lambda: runtime.predict([image] * best_batch), 3)
            )
            one = asyncio.run(_load(url, image, clients=1, requests=args.repeats))
            one_grpc = asyncio.run(
                _load_grpc(grpc_target, image, input_name=input_name, clients=1, requests=args.repeats)
            )
            before = _server_metrics(url)
            many = asyncio.run(_load(url, image, clients=args.clients, requests=args.concurrent_requests))
            after = _server_metrics(url)
            many_grpc = asyncio.run(
                _load_grpc(
                    grpc_target,
                    image,
                    input_name=input_name,
                    clients=args.clients,
                    requests=args.concurrent_requests,
                )
            )
            after_grpc = _server_metrics(url)
            batches = after["fpgaserve_batch_size_count"] - before["fpgaserve_batch_size_count"]
            busy = (
                after["fpgaserve_batch_duration_seconds_sum"] - before["fpgaserve_batch_duration_seconds_sum"]
            )
            sent += one["requests"] + many["requests"] + one_grpc["requests"] + many_grpc["requests"]
            rounds.append(
                {
                    "local_p50": local_p50,
                    "local_best": local_best,
                    "one": one,
                    "many": many,
                    "one_grpc": one_grpc,
                    "many_grpc": many_grpc,
                    "mean_batch_grpc": many_grpc["requests"]
                    / (after_grpc["fpgaserve_batch_size_count"] - after["fpgaserve_batch_size_count"]),
                    "worker_busy_grpc": (
                        after_grpc["fpgaserve_batch_duration_seconds_sum"]
                        - after["fpgaserve_batch_duration_seconds_sum"]
                    )
                    / (many_grpc["requests"] / many_grpc["throughput"]),
                    "mean_batch": many["requests"] / batches,
                    "worker_busy": busy / (many["requests"] / many["throughput"]),
                }
            )
        if sent < 1000:
            asyncio.run(_load(url, image, clients=args.clients, requests=1000 - sent))
        rss_after = _rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        runtime.close()

    def med(get: Any) -> float:
        return statistics.median(get(r) for r in rounds)

    errors = [
        e
        for r in rounds
        for e in r["one"]["errors"] + r["many"]["errors"] + r["one_grpc"]["errors"] + r["many_grpc"]["errors"]
    ]
    return {
        "runtime": args.model_dir
        or f"fake ({args.batch_cost_ms:g} ms/batch + {args.item_cost_ms:g} ms/input)",
        "rounds": len(rounds),
        "in_process_p50_ms": med(lambda r: r["local_p50"]) * 1e3,
        "in_process_sweep": {str(b): t for b, t in sweep.items()},
        "in_process_best": {"batch": best_batch, "per_s": med(lambda r: r["local_best"])},
        "one_client": {
            "p50_ms": med(lambda r: r["one"]["p50"]) * 1e3,
            "p99_ms": med(lambda r: r["one"]["p99"]) * 1e3,
        },
        "overhead_ratio": med(lambda r: r["one"]["p50"] / r["local_p50"]),
        "concurrent": {
            "clients": args.clients,
            "per_s": med(lambda r: r["many"]["throughput"]),
            "p50_ms": med(lambda r: r["many"]["p50"]) * 1e3,
            "p99_ms": med(lambda r: r["many"]["p99"]) * 1e3,
            "mean_batch": med(lambda r: r["mean_batch"]),
            "worker_busy": med(lambda r: r["worker_busy"]),
        },
        "throughput_ratio": med(lambda r: r["many"]["throughput"] / r["local_best"]),
        "grpc": {
            "one_p50_ms": med(lambda r: r["one_grpc"]["p50"]) * 1e3,
            "one_p99_ms": med(lambda r: r["one_grpc"]["p99"]) * 1e3,
            "overhead_ratio": med(lambda r: r["one_grpc"]["p50"] / r["local_p50"]),
            "vs_http_p50": med(lambda r: r["one_grpc"]["p50"] / r["one"]["p50"]),
            "per_s": med(lambda r: r["many_grpc"]["throughput"]),
            "p50_ms": med(lambda r: r["many_grpc"]["p50"]) * 1e3,
            "p99_ms": med(lambda r: r["many_grpc"]["p99"]) * 1e3,
            "throughput_ratio": med(lambda r: r["many_grpc"]["throughput"] / r["local_best"]),
            "vs_http_throughput": med(lambda r: r["many_grpc"]["throughput"] / r["many"]["throughput"]),
            "mean_batch": med(lambda r: r["mean_batch_grpc"]),
            "worker_busy": med(lambda r: r["worker_busy_grpc"]),
        },
        "errors": len(errors),
        "requests": sent if sent >= 1000 else 1000,
        "rss_mib": {"after_start": rss_start / 2**20, "after_1000": rss_after / 2**20},
        "error_samples": errors[:3],
    }


def print_table(r: dict[str, Any]) -> None:
    one, many, best, g = r["one_client"], r["concurrent"], r["in_process_best"], r["grpc"]
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    rows = [
        ("runtime", r["runtime"], ""),
        ("rounds (medians below)", str(r["rounds"]), ""),
        ("in-process p50, batch 1", f"{r['in_process_p50_ms']:.2f} ms", ""),
        ("in-process best throughput", f"{best['per_s']:.1f}/s (batch {best['batch']})", ""),
        ("1 client /score p50 (p99)", f"{one['p50_ms']:.2f} ms ({one['p99_ms']:.2f} ms)", ""),
        ("  server / in-process p50", f"{r['overhead_ratio']:.3f}x", verdict(r["overhead_ratio"] <= 1.15)),
        (f"{many['clients']} clients throughput", f"{many['per_s']:.1f}/s", ""),
        ("  / best in-process", f"{r['throughput_ratio']:.1%}", verdict(r["throughput_ratio"] >= 0.9)),
        (f"{many['clients']} clients p50 / p99", f"{many['p50_ms']:.1f} / {many['p99_ms']:.1f} ms", ""),
        ("  mean batch, worker busy", f"{many['mean_batch']:.1f}, {many['worker_busy']:.0%}", ""),
        ("1 client gRPC ModelInfer p50 (p99)", f"{g['one_p50_ms']:.2f} ms ({g['one_p99_ms']:.2f} ms)", ""),
        ("  gRPC / in-process p50", f"{g['overhead_ratio']:.3f}x", verdict(g["overhead_ratio"] <= 1.15)),
        ("  gRPC / HTTP p50", f"{g['vs_http_p50']:.3f}x", verdict(g["vs_http_p50"] <= 1.0)),
        (f"{many['clients']} clients gRPC throughput", f"{g['per_s']:.1f}/s", ""),
        ("  / best in-process", f"{g['throughput_ratio']:.1%}", verdict(g["throughput_ratio"] >= 0.9)),
        ("  / HTTP", f"{g['vs_http_throughput']:.1%}", verdict(g["vs_http_throughput"] >= 1.0)),
        (f"{many['clients']} clients gRPC p50 / p99", f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} ms", ""),
        ("  mean batch, worker busy", f"{g['mean_batch']:.1f}, {g['worker_busy']:.0%}", ""),
        ("errors (HTTP and gRPC)", f"{r['errors']} of {r['requests']} requests", verdict(r["errors"] == 0)),
        ("server RSS after start-up", f"{r['rss_mib']['after_start']:.1f} MiB", ""),
        ("server RSS after 1,000+ requests", f"{r['rss_mib']['after_1000']:.1f} MiB", ""),
    ]  # fmt: skip
    width = max(len(name) for name, _, _ in rows)
    for name, value, mark in rows:
        print(f"{name:<{width}}  {value:<34} {mark}".rstrip())
    for sample in r["error_samples"]:
        print(f"error: {sample}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-fake"]:
        return _serve_fake(json.loads(argv[1]), argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="a package to serve with fpgaserve serve (default: the fake runtime)")
    p.add_argument("--image", help="the JPEG/PNG to score (default: scikit-image's chelsea photo)")
    p.add_argument("--batch-cost-ms", type=float, default=2.0, help="fake runtime: cost per batch")
    p.add_argument("--item-cost-ms", type=float, default=30.0, help="fake runtime: cost per input")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    p.add_argument("--repeats", type=int, default=30, help="one-client and in-process samples per round")
    p.add_argument("--concurrent-requests", type=int, default=128, help="per round")
    p.add_argument("--max-batch-size", type=int, default=8, help="the server's (default: its own default)")
    p.add_argument("--max-batch-delay-ms", type=float, default=5.0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
