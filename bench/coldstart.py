"""Cold start and footprint of ``fpgaserve serve``: process start to ready, to the first answer, and memory.

For the EfficientNet-Lite0 package (or ``--model-dir``), side by side in one run:

- **warm caches**: numba's kernel cache already filled by an earlier start (the same machine again);
- **image cache**: a first start in a pod of the image: an empty writable ``NUMBA_CACHE_DIR`` and the
  read-only ``FPGASERVE_KERNEL_CACHE`` that ``fpgaserve warm-kernels`` filled (as the Dockerfile does);
- **cold caches**: an empty ``NUMBA_CACHE_DIR`` and no image copy (a fresh machine, or an image
  without the copy: the kernels are compiled at start);

each a real ``fpgaserve serve`` process on loopback, timed from ``Popen`` to ``/readyz`` 200 (and its
CPU time, user + system, at that moment), then to the first ``POST /score`` answer; resident memory (VmRSS) after start-up, after ``--requests``
requests one at a time (batches of one) and after ``--burst`` more from ``--clients`` concurrent
clients (batches of up to the server's 8: the activations of a full batch, which npu/allocator.py
keeps for speed), after the idle spell that follows (``--idle-trim-s``: the server gives that memory
back; the figure is read once VmRSS has stopped falling), and the peak (VmHWM). Prints one table;
``--json`` prints the figures instead.

``--baseline-python`` adds cases: the warm-cache start (and, without ``--only-warm``, the cold-cache
start) with another interpreter (another checkout's venv, e.g. ``/work/main/.venv/bin/python``),
interleaved with the others, for a side-by-side delta
on a shared machine (its server is not given ``--idle-trim-s``: older ones have no such option).

``--forms`` compares instead the package as written now (its preprocessing and classifier in their
host form: no TensorFlow in the server) with the same pipeline saved ``host_lowering=False`` (every
CPU stage a SavedModel: TensorFlow imported, as before issue 14), both with warm caches, and the
peak memory one 48-megapixel JPEG adds: decoded at 1/2 scale under the default pixel limit, and
whole when ``--max-image-pixels`` lets it through.

    python bench/coldstart.py
    python bench/coldstart.py --model-dir service_def.zip --runs 3 --requests 1000
    python bench/coldstart.py --forms
    python bench/coldstart.py --model-dir service_def.zip --baseline-python ../main/.venv/bin/python
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
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LISTENING = re.compile(r"listening on (https?://[^\s]+)")
# The server's default --idle-trim-s (fpgaserve.server.settings.ServerSettings.idle_trim_s).
IDLE_TRIM_S = 5.0


def build_package(work: Path, model_path: str | None, *, host_lowering: bool = True) -> Path:
    """The quickstart's pipeline (preprocess -> EfficientNet-Lite0 on the FPGA -> classifier)."""
    from fpgaserve.sdk.pipeline import zoo_pipeline
    from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0

    model = QuantizedEfficientNetLite0(model_path) if model_path else QuantizedEfficientNetLite0()
    name = "service_def.zip" if host_lowering else "service_def-tensorflow.zip"
    return zoo_pipeline(model).save(work / name, host_lowering=host_lowering).path


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=ssl.create_default_context()) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds so far (less sensitive to the machine's load than wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def one_start(
    package: Path,
    image: bytes,
    *,
    numba_cache: Path,
    requests: int,
    burst: int = 0,
    clients: int = 16,
    large: bytes | None = None,
    extra: tuple[str, ...] = (),
    kernel_cache: Path | None = None,
    python: str = sys.executable,
    idle_trim_s: float | None = None,
    idle_wait_s: float = IDLE_TRIM_S,
) -> dict[str, float]:
    """Start a server, wait for ready and a first answer, send ``requests`` more one at a time, then
    ``burst`` from ``clients`` threads, wait out an idle spell of ``idle_wait_s`` (the server's
    ``--idle-trim-s`` is ``idle_trim_s``; None: not passed), then ``large`` (whose peak memory it
    reports); stop it."""
    env = {k: v for k, v in os.environ.items() if k != "FPGASERVE_KERNEL_CACHE"}
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    if kernel_cache is not None:
        env["FPGASERVE_KERNEL_CACHE"] = str(kernel_cache)
    argv = [python, "-m", "fpgaserve.cli.main", "serve", str(package), "--host", "127.0.0.1",
            "--port", "0", "--drain-s", "0", *extra]  # fmt: skip
    if idle_trim_s is not None:
        argv += ["--idle-trim-s", str(idle_trim_s)]
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
        # Keep reading its log: a full pipe would block the server's next log line.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        deadline = time.perf_counter() + 600
        while _status(f"{url}/readyz") != 200:
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the server never became ready:\n{log}")
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        cpu_ready_s = _cpu_s(proc.pid)
        memory_ready = _memory_mib(proc.pid)

        def score(data: bytes = image) -> None:
            request = urllib.request.Request(
                f"{url}/score", data=data, headers={"Content-Type": "application/octet-stream"}
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()

        score()
        first_s = time.perf_counter() - started
        for _ in range(requests):
            score()
        memory_after = _memory_mib(proc.pid)
        if burst:
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda _: score(), range(burst)))
        memory_burst = _memory_mib(proc.pid)
        memory_idle = _after_idle(proc.pid, idle_s=idle_wait_s) if burst else memory_burst["VmRSS"]
        figures = {
            "ready_s": ready_s,
            "cpu_ready_s": cpu_ready_s,
            "first_answer_s": first_s,
            "rss_ready_mib": memory_ready["VmRSS"],
            "rss_after_mib": memory_after["VmRSS"],
            "rss_burst_mib": memory_burst["VmRSS"],
            "rss_idle_mib": memory_idle,
            "peak_mib": memory_burst["VmHWM"],
        }
        if large is not None:
            started_large = time.perf_counter()
            score(large)
            figures["large_s"] = time.perf_counter() - started_large
            figures["large_peak_added_mib"] = _memory_mib(proc.pid)["VmHWM"] - memory_after["VmHWM"]
        return figures
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _after_idle(pid: int, *, idle_s: float) -> float:
    """VmRSS once the server has been idle ``idle_s`` and its resident set has stopped falling (it
    is read every 0.25 s; a server that does not trim reads the same after the spell)."""
    time.sleep(idle_s)  # the spell itself: nothing to poll for until it has passed
    last = _memory_mib(pid)["VmRSS"]
    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline:
        time.sleep(0.25)
        now = _memory_mib(pid)["VmRSS"]
        if now >= last - 0.5:
            return now
        last = now
    return last


def _table(title: str, summary: dict[str, dict[str, float]]) -> None:
    print(title)
    print(f"{'case':<22} {'ready s':>8} {'CPU s':>6} {'1st answer s':>13} {'RSS ready MiB':>14} {'RSS after MiB':>14} "
          f"{'RSS burst MiB':>14} {'RSS idle MiB':>13} {'peak MiB':>9}")  # fmt: skip
    for case, s in summary.items():
        print(f"{case:<22} {s['ready_s']:>8.2f} {s['cpu_ready_s']:>6.2f} {s['first_answer_s']:>13.2f} {s['rss_ready_mib']:>14.0f} "
              f"{s['rss_after_mib']:>14.0f} {s['rss_burst_mib']:>14.0f} {s['rss_idle_mib']:>13.0f} "
              f"{s['peak_mib']:>9.0f}")  # fmt: skip


def _large_jpeg() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.runtime.test_host_serving import large_jpeg

    return large_jpeg()


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
    parser.add_argument(
        "--burst",
        type=int,
        default=160,
        help="requests from --clients concurrent clients after those (default: %(default)s)",
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent clients of --burst (default: %(default)s)"
    )
    parser.add_argument(
        "--forms", action="store_true", help="host-lowered package vs TensorFlow stages (warm caches)"
    )
    parser.add_argument(
        "--idle-trim-s",
        type=float,
        default=IDLE_TRIM_S,
        help="the servers' --idle-trim-s, and the idle spell waited after the burst (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-python",
        metavar="PYTHON",
        help="also start the warm-cache case with this interpreter (another checkout's venv), interleaved",
    )
    parser.add_argument(
        "--only-warm", action="store_true", help="the warm-cache case (and the baseline's) only"
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
        # Fill the warm cache (each checkout's kernels have entries of their own).
        for python in [sys.executable, *([args.baseline_python] if args.baseline_python else [])]:
            one_start(package, image, numba_cache=warm_cache, requests=0, python=python)
        results: dict[str, list[dict[str, float]]] = {}
        if args.forms:
            old = build_package(work, args.model_path, host_lowering=False)
            large = _large_jpeg()
            whole = ("--max-image-pixels", str(50_000_000))
            cases = {
                "host stages": dict(package=package, large=large),
                "tensorflow stages": dict(package=old, large=large, extra=whole),
                "host, whole decode": dict(package=package, large=large, extra=whole),
            }
        elif args.only_warm:
            cases = {"warm caches": dict(package=package)}
        else:
            kernel_cache = work / "kernel-cache"  # what the Dockerfile's build stage does
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fpgaserve.cli.main",
                    "warm-kernels",
                    "--cache-dir",
                    str(kernel_cache),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            warm_s = time.perf_counter() - started
            for path in [kernel_cache, *kernel_cache.rglob("*")]:  # read-only, as in the image
                path.chmod(path.stat().st_mode & 0o555)
            cases = {
                "warm caches": dict(package=package),
                "image cache": dict(package=package, kernel_cache=kernel_cache),
                "cold caches": dict(package=package),
            }
        for options in cases.values():
            options["idle_trim_s"] = args.idle_trim_s
        if args.baseline_python:
            cases["baseline, warm caches"] = dict(package=package, python=args.baseline_python)
            if not args.forms and not args.only_warm:
                cases["baseline, cold caches"] = dict(package=package, python=args.baseline_python)
        for options in cases.values():
            options["idle_wait_s"] = args.idle_trim_s
        for run in range(args.runs):  # interleaved, so every case sees the same machine
            for case, options in cases.items():
                cache = {
                    "cold caches": work / f"numba-cold-{run}",
                    "baseline, cold caches": work / f"numba-baseline-cold-{run}",
                    "image cache": work / f"numba-pod-{run}",
                }.get(case, warm_cache)
                figures = one_start(
                    numba_cache=cache, image=image, requests=args.requests, burst=args.burst,
                    clients=args.clients, **options,  # type: ignore[arg-type]
                )  # fmt: skip
                results.setdefault(case, []).append(figures)
        if not args.forms and not args.only_warm:
            for path in [kernel_cache, *kernel_cache.rglob("*")]:  # so that the directory can be removed
                path.chmod(path.stat().st_mode | 0o200)
    summary = {
        case: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for case, runs in results.items()
    }
    load = os.getloadavg()
    if args.json:
        print(
            json.dumps(
                {
                    "load": load,
                    **summary,
                    **({} if args.forms or args.only_warm else {"warm_kernels_s": warm_s}),
                },
                indent=2,
            )
        )
        return 0
    _table(
        f"fpgaserve serve {package.name}: median of {args.runs} starts, {args.requests} requests after the "
        f"first, then {args.burst} from {args.clients} clients; load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}",
        summary,
    )
    if not args.forms and not args.only_warm:
        print(f"warm-kernels (the image build step): {warm_s:.1f} s")
    if args.forms:
        print(f"{'one 48 MP JPEG':<22} {'seconds':>8} {'peak added MiB':>15}")
        for case, s in summary.items():
            print(f"{case:<22} {s['large_s']:>8.2f} {s['large_peak_added_mib']:>15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
