from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fpgaserve.npu import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuning_applies_once_on_glibc() -> None:
    assert allocator.tune_allocator() is True
    assert allocator.tune_allocator() is True  # idempotent: the second call changes nothing


def test_tuning_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPGASERVE_MALLOC_TUNING", "0")
    assert allocator._apply() is False


ARENAS = """
import ctypes, sys, threading
import numpy as np
from fpgaserve.npu import allocator

allocator.tune_allocator()
started, release = threading.Barrier(5), threading.Event()

def work():
    held = [np.ones(1 << 16) for _ in range(4)]  # each thread allocates while the others do
    started.wait()
    release.wait()

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
started.wait()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
release.set()
for t in threads:
    t.join()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize(("env", "one_arena"), [({}, True), ({"FPGASERVE_MALLOC_TUNING": "0"}, False)])
def test_threads_share_one_arena_when_tuned(env: dict[str, str], one_arena: bool) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", ARENAS], capture_output=True, text=True, timeout=120, env=environ
    )
    assert done.returncode == 0, done.stderr[-2000:]
    arenas = [line for line in done.stderr.splitlines() if line.startswith("Arena ")]
    assert (len(arenas) == 1) is one_arena, done.stderr


TRIM = """
import numpy as np
from fpgaserve.npu import allocator

allocator.tune_allocator()
held = [np.ones(8 << 20) for _ in range(8)]  # 512 MiB, then freed: the tuning keeps it
before = allocator.resident_mib()
del held
kept = allocator.resident_mib()
released = allocator.trim_heap()
print(before, kept, released, allocator.resident_mib())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_gives_back_what_the_tuning_kept() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", TRIM], capture_output=True, text=True, timeout=120, env=environ, check=True
    )
    before, kept, released, after = done.stdout.split()
    assert float(before) > 500 and float(kept) > 500  # freed but kept: the tuning's reuse
    assert released == "True" and float(after) < float(kept) - 450
