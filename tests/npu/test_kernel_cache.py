"""Kernels compiled once: ``fpgaserve warm-kernels`` fills a cache that fresh processes load from.

Each case is a fresh interpreter (numba reads its cache settings at import). Compiling every kernel
takes about 30 s on 2 cores, so one module-wide warm run fills the image's copy.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fpgaserve.npu.kernel_cache import IMAGE_CACHE_ENV, seed_numba_cache

ROOT = Path(__file__).resolve().parents[2]

# Whole programs (every op kind, a depthwise conv feeding a pointwise one, a read-only batch) in
# every preset format and a mixed one, at batch 1 and split batches; prints the cache counts.
RUN_PROGRAMS = r"""
import dataclasses, json
import numpy as np
from fpgaserve.npu import EmulatedDevice, Executor, FORMATS, DeviceModel
from fpgaserve.npu import kernels_numba
from fpgaserve.npu.kernel_cache import cache_counts
from fpgaserve.npu.program import Op
from tests.npu.helpers import make_program
from tests.npu.test_executor import conv_program, mobile_program, residual_program, weights

def depthwise_pointwise(fmt):
    ops = [
        Op("depthwise_conv2d", "dw", ("x",), "d",
           {"kernel": [3, 3], "pads": [1, 1, 1, 1], "activation": "relu6", "out_shape": [6, 6, 20]}),
        Op("conv2d", "pw", ("d",), "y", {"activation": "relu", "out_shape": [6, 6, 8],
                                          "format": dataclasses.asdict(FORMATS["msfp16"])}),
    ]
    return make_program(fmt=fmt, input_shape=(6, 6, 20), output_shape=(6, 6, 8), ops=ops,
                        weights={"dw": ("depthwise_conv2d", weights(1, 3, 3, 20)),
                                 "pw": ("conv2d", weights(2, 1, 1, 20, 8))})

big = DeviceModel("big", 1 << 30, 6, 128, 1024, 300.0)
programs = [conv_program(stride=2)[0], residual_program(), mobile_program()]
for fmt in FORMATS.values():
    for program in [*(dataclasses.replace(p, fmt=fmt) for p in programs), depthwise_pointwise(fmt)]:
        with Executor(program, device=EmulatedDevice(big), kernels=kernels_numba) as ex:
            for n in (1, 3):
                x = np.random.default_rng(n).standard_normal((n, *program.input_shape)).astype(np.float32)
                x.flags.writeable = False
                ex.run(x)
counts = cache_counts(kernels_numba.dispatchers(block_sizes=(16, 128)))
print(json.dumps({"loaded": sum(h for h, _ in counts.values()),
                  "compiled": sum(m for _, m in counts.values()), "kernels": counts}))
"""


def run_python(code: str, env: dict[str, str]) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "FPGASERVE_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def warm(cache_dir: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, object]:
    argv = [
        sys.executable,
        "-m",
        "fpgaserve.cli.main",
        "warm-kernels",
        "--cache-dir",
        str(cache_dir),
        "--json",
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "FPGASERVE_"))}
    proc = subprocess.run(
        [*argv, *extra], cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def snapshot(directory: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime) for p in directory.rglob("*")
    }


def make_read_only(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, object]]]:
    """The image's copy: filled by ``fpgaserve warm-kernels`` in an empty directory, then read-only."""
    directory = tmp_path_factory.mktemp("image") / "kernel-cache"
    report = warm(directory)
    make_read_only(directory)
    yield directory, report
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)  # so that pytest can clean up


def test_warm_kernels_compiles_every_kernel_into_an_empty_directory(
    image_cache: tuple[Path, dict[str, object]],
) -> None:
    directory, report = image_cache
    assert report["loaded"] == 0
    kernels = report["kernels"]
    assert isinstance(kernels, dict)
    # The window quantizer of both preset block sizes, depthwise, im2col, bias + activation.
    assert {"_window_kernel[16]", "_window_kernel[128]", "_depthwise_bfp", "_im2col", "_bias_act"} <= set(
        kernels
    )
    assert report["compiled"] == sum(k["compiled"] for k in kernels.values()) >= 5
    files = {p.name for p in directory.rglob("*.nbi")}
    assert any("_window_kernel" in f for f in files) and any("_depthwise_bfp" in f for f in files)


def test_a_fresh_process_loads_every_kernel_from_the_read_only_image_copy(
    image_cache: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    directory, _ = image_cache
    before = snapshot(directory)
    writable = tmp_path / "numba-cache"  # the pod's emptyDir, empty at start
    result = run_python(RUN_PROGRAMS, {IMAGE_CACHE_ENV: str(directory), "NUMBA_CACHE_DIR": str(writable)})
    assert result["compiled"] == 0, result["kernels"]
    assert isinstance(result["loaded"], int) and result["loaded"] >= 5
    assert snapshot(directory) == before  # only read (root ignores the mode bits, so check)


def test_without_numba_cache_dir_the_image_copy_is_seeded_into_the_temporary_directory(
    image_cache: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    directory, _ = image_cache
    result = run_python(
        "import json, numba, numpy as np\n"
        "from fpgaserve.npu import FORMATS, kernels_numba as k\n"
        "from fpgaserve.npu.kernel_cache import cache_counts\n"
        "k.bias_activation(np.ones((4, 3), np.float32), np.ones(3, np.float32), 'relu')\n"
        "c = cache_counts({'b': k._bias_act})['b']\n"
        "print(json.dumps({'loaded': c[0], 'compiled': c[1], 'dir': numba.config.CACHE_DIR}))",
        {IMAGE_CACHE_ENV: str(directory), "TMPDIR": str(tmp_path)},
    )
    assert result == {"loaded": 1, "compiled": 0, "dir": str(tmp_path / "numba-cache")}


def test_without_the_image_copy_a_fresh_process_compiles(tmp_path: Path) -> None:
    result = run_python(
        "import json, numpy as np\n"
        "from fpgaserve.npu import FORMATS, kernels_numba as k\n"
        "from fpgaserve.npu.kernel_cache import cache_counts\n"
        "k.quantize_window(np.ones((1, 2, 2, 20), np.float32), FORMATS['int12-bfp'])\n"
        "c = cache_counts(k.dispatchers(block_sizes=(16,)))\n"
        "print(json.dumps({'loaded': sum(h for h, _ in c.values()), 'compiled': sum(m for _, m in c.values())}))",
        {"NUMBA_CACHE_DIR": str(tmp_path / "empty")},
    )
    assert result["loaded"] == 0
    assert isinstance(result["compiled"], int) and result["compiled"] >= 1  # with the kernels it calls


def test_another_cpu_compiles_and_caches_in_the_writable_directory(
    image_cache: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """Entries are keyed on the CPU: a node with another one (here: LLVM's generic x86-64) misses the
    image's copy, compiles on first use and keeps the result in the pod's writable directory."""
    directory, _ = image_cache
    writable = tmp_path / "numba-cache"
    code = (
        "import json, numpy as np\n"
        "from fpgaserve.npu import FORMATS, kernels_numba as k\n"
        "from fpgaserve.npu.kernel_cache import cache_counts\n"
        "k.bias_activation(np.ones((4, 3), np.float32), np.ones(3, np.float32), 'relu')\n"
        "c = cache_counts({'b': k._bias_act})['b']\n"
        "print(json.dumps({'loaded': c[0], 'compiled': c[1]}))"
    )
    env = {IMAGE_CACHE_ENV: str(directory), "NUMBA_CACHE_DIR": str(writable), "NUMBA_CPU_NAME": "generic"}
    assert run_python(code, env) == {"loaded": 0, "compiled": 1}
    assert run_python(code, env) == {"loaded": 1, "compiled": 0}  # the next start of the pod
    native = {k: v for k, v in env.items() if k != "NUMBA_CPU_NAME"}
    assert run_python(code, native) == {"loaded": 1, "compiled": 0}  # one index holds both CPUs' entries


def test_seeding_copies_what_the_target_lacks_and_keeps_the_rest(tmp_path: Path) -> None:
    source, target = tmp_path / "image", tmp_path / "cache"
    (source / "npu_x").mkdir(parents=True)
    (source / "npu_x" / "k.nbi").write_bytes(b"image index")
    (source / "npu_x" / "k.1.nbc").write_bytes(b"image data")
    (target / "npu_x").mkdir(parents=True)
    (target / "npu_x" / "k.nbi").write_bytes(b"pod index")
    assert seed_numba_cache(source=str(source), target=str(target)) == 1
    assert (target / "npu_x" / "k.nbi").read_bytes() == b"pod index"
    assert (target / "npu_x" / "k.1.nbc").read_bytes() == b"image data"
    assert sorted(p.name for p in (target / "npu_x").iterdir()) == ["k.1.nbc", "k.nbi"]  # no partial files
    assert seed_numba_cache(source=str(source), target=str(target)) == 0
    assert seed_numba_cache(source=str(source), target=str(source)) == 0
    assert seed_numba_cache(source=str(tmp_path / "missing"), target=str(target)) == 0
    assert seed_numba_cache(source="", target=str(target)) == 0


def test_warm_kernels_refuses_a_directory_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "warm-kernels", "--cache-dir", str(blocker / "sub")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot create the cache directory" in proc.stderr


ANNOUNCE = (
    "import json, sys, numpy as np\n"
    "from fpgaserve.npu import kernels_numba as k\n"
    "from fpgaserve.npu.precompile import announce_compiling\n"
    "said = []\n"
    "announce_compiling(said.append)\n"
    "k.bias_activation(np.ones((4, 3), np.float32), np.ones(3, np.float32), 'relu')\n"
    "k.add_activation(np.ones((1, 2, 2, 3), np.float32), np.ones((1, 2, 2, 3), np.float32), 'relu')\n"
    "print(json.dumps({'said': said}))"
)


def test_serve_speaks_once_when_numba_compiles_and_not_when_it_loads(tmp_path: Path) -> None:
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = run_python(ANNOUNCE, env)["said"]
    assert isinstance(first, list) and len(first) == 1 and "compiling the emulator's kernels" in first[0]
    assert run_python(ANNOUNCE, env)["said"] == []  # both kernels load from the cache now
