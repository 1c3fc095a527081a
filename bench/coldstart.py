"""Cold start and footprint of ``fpgaserve serve``: process start to ready, to the first answer, and memory.

For the EfficientNet-Lite0 package (or ``--model-dir``), side by side in one run:

- **warm caches**: numba's kernel cache already filled by an earlier start (the same machine again);
- **image cache**: a first start in a pod of the image: an empty writable ``NUMBA_CACHE_DIR`` and the
  read-only ``FPGASERVE_KERNEL_CACHE`` that ``fpgaserve warm-kernels`` filled (as the Dockerfile does);
- **cold caches**: an empty ``NUMBA_CACHE_DIR`` and no image copy (a fresh machine, or an image
  without the copy: the kernels are compiled at start);

each a real ``fpgaserve serve`` process on loopback, timed from ``Popen`` to ``/readyz`` 200, then to
the first ``POST /score`` answer; resident memory (VmRSS, VmHWM) after start-up and after
``--requests`` requests. Prints one table; ``--json`` prints the figures instead.

    python bench/coldstart.py
    python bench/coldstart.py --model-dir service_def.zip --runs 3 --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on (https?://[^\s]+)")


def build_package(work: Path, model_path: str | None) -> Path:
    """The quickstart's pipeline (preprocess -> EfficientNet-Lite0 on the FPGA -> classifier)."""
    from fpgaserve.sdk.pipeline import zoo_pipeline
    from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0

    model = QuantizedEfficientNetLite0(model_path) if model_path else QuantizedEfficientNetLite0()
    return zoo_pipeline(model).save(work / "service_def.zip").path


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=ssl.create_default_context()) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def one_start(
    package: Path, image: bytes, *, numba_cache: Path, requests: int, kernel_cache: Path | None = None
) -> dict[str, float]:
    """Start a server, wait for ready and a first answer, send ``requests`` more, stop it."""
    env = {k: v for k, v in os.environ.items() if k != "FPGASERVE_KERNEL_CACHE"}
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    if kernel_cache is not None:
        env["FPGASERVE_KERNEL_CACHE"] = str(kernel_cache)
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "serve", str(package), "--host", "127.0.0.1",
            "--port", "0"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        url = None
        log = ""
        while url is None:  # the listening line comes before the model is loaded
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"the server exited before listening:\n{log}")
            log += line
            match = LISTENING.search(line)
            url = match.group(1) if match else None
        deadline = time.perf_counter() + 600
        while _status(f"{url}/readyz") != 200:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the server never became ready:\n{log}{proc.stderr.read()}")
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        memory_ready = _memory_mib(proc.pid)

        def score() -> None:
            request = urllib.request.Request(
                f"{url}/score", data=image, headers={"Content-Type": "application/octet-stream"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()

        score()
        first_s = time.perf_counter() - started
        for _ in range(requests):
            score()
        memory_after = _memory_mib(proc.pid)
        return {
            "ready_s": ready_s,
            "first_answer_s": first_s,
            "rss_ready_mib": memory_ready["VmRSS"],
            "rss_after_mib": memory_after["VmRSS"],
            "peak_mib": memory_after["VmHWM"],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", help="a package to serve (default: build EfficientNet-Lite0's)")
    parser.add_argument("--model-path", help="where the zoo keeps weights and programs")
    parser.add_argument("--runs", type=int, default=2, help="starts per case (default: %(default)s)")
    parser.add_argument(
        "--requests", type=int, default=100, help="requests after the first (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import skimage.data

    from fpgaserve.server.testing import encode_jpeg

    image = encode_jpeg(skimage.data.chelsea())
    with tempfile.TemporaryDirectory(prefix="fpgaserve-coldstart-") as tmp:
        work = Path(tmp)
        package = Path(args.model_dir) if args.model_dir else build_package(work, args.model_path)
        warm_cache = work / "numba-warm"
        one_start(package, image, numba_cache=warm_cache, requests=0)  # fills the warm cache
        kernel_cache = work / "kernel-cache"  # what the Dockerfile's build stage does
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "fpgaserve.cli.main", "warm-kernels", "--cache-dir", str(kernel_cache)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        warm_s = time.perf_counter() - started
        for path in [kernel_cache, *kernel_cache.rglob("*")]:  # read-only, as in the image
            path.chmod(path.stat().st_mode & 0o555)
        results: dict[str, list[dict[str, float]]] = {"warm caches": [], "image cache": [], "cold caches": []}
        for run in range(args.runs):  # interleaved, so all cases see the same machine
            results["warm caches"].append(
                one_start(package, image, numba_cache=warm_cache, requests=args.requests)
            )
            results["image cache"].append(
                one_start(
                    package,
                    image,
                    numba_cache=work / f"numba-pod-{run}",
                    requests=args.requests,
                    kernel_cache=kernel_cache,
                )
            )
            cold = work / f"numba-cold-{run}"
            results["cold caches"].append(one_start(package, image, numba_cache=cold, requests=args.requests))
        for path in [kernel_cache, *kernel_cache.rglob("*")]:  # so that the directory can be removed
            path.chmod(path.stat().st_mode | 0o200)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    summary: dict[str, Any] = {
        case: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for case, runs in results.items()
    }
    if args.json:
        print(json.dumps({**summary, "warm_kernels_s": warm_s, "load_average": load}, indent=2))
        return 0
    print(
        f"fpgaserve serve {package.name}: median of {args.runs} starts, {args.requests} requests after the first"
    )
    print(f"warm-kernels (image build step): {warm_s:.1f} s; load average at the end: {load}")
    print(
        f"{'case':<12} {'ready s':>8} {'1st answer s':>13} {'RSS ready MiB':>14} {'RSS after MiB':>14} {'peak MiB':>9}"
    )
    for case, s in summary.items():
        print(f"{case:<12} {s['ready_s']:>8.2f} {s['first_answer_s']:>13.2f} {s['rss_ready_mib']:>14.0f} "
              f"{s['rss_after_mib']:>14.0f} {s['peak_mib']:>9.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
