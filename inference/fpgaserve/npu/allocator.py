"""Keep freed activation buffers in the process instead of handing them back to the kernel.

Role: one process-wide tuning step the executor applies once. An emulated run allocates tens of
MiB of activations per batch (about 30 MiB for EfficientNet-Lite0 at batch 1). glibc serves blocks
that large with ``mmap`` and unmaps them on free, so every run faults in fresh zeroed pages: on
this project's 2-core machine that was a third of EfficientNet-Lite0's batch-1 time (37 ms against
24 ms with the tuning; bench/fpga.py). Raising glibc's mmap and trim thresholds makes freed blocks
reusable, as TensorFlow's own arena allocator does for TensorFlow. Memory then stays at the
high-water mark of the largest batch, which is what a serving process wants.

Threads other than the main one (the server's batch worker, the parts of a split batch) allocate
from arenas of their own, whose heaps glibc unmaps as soon as they are free whatever the trim
threshold (its ``heap_trim`` consults only ``M_TOP_PAD``): about 6,000 page faults and a fifth of
the time per EfficientNet-Lite0 batch of 8 in a worker thread. ``M_TOP_PAD`` of a whole heap
(64 MiB) keeps them.

Each of those arenas then keeps its own high-water mark, and most threads used each once: the
server's load thread (the batch-1 warm-up and the program's lowering), the validators, the batch
worker and the part threads. ``M_ARENA_MAX`` = 1 puts every thread's blocks in the main arena, where
the activations of one batch reuse what another thread freed: ``fpgaserve serve`` of
EfficientNet-Lite0 478 -> 417 MiB after a batch of 8, with the same CPU time per batch (the part
threads' allocations are few and large, so the arena's lock is rarely contended; docs/benchmarks.md).
glibc picks a thread's arena at its first allocation, so the server applies this before it starts
any thread (``cli/serve.py``); later calls still cover threads that have not allocated yet. An explicit
``MALLOC_ARENA_MAX`` in the environment (glibc's own setting) is left alone.

Only glibc has ``mallopt``; elsewhere this does nothing. ``FPGASERVE_MALLOC_TUNING=0`` turns it off.

The other half of the trade is ``trim_heap``: glibc's ``malloc_trim(0)``, which hands the free
pages of every arena back to the kernel (the top of the heap, and whole free pages inside it, by
``MADV_DONTNEED``) whatever the thresholds above. The server's batch worker calls it once no input
has come for a few seconds (``--idle-trim-s``, ``server/batching.py``): a burst of full batches of
8 raised EfficientNet-Lite0's server from about 260 to 430 MiB, and the tuning kept it there for
good; after the trim it is back near its size at ready, and the next burst pays its page faults once
(docs/benchmarks.md, issue 14). While requests keep coming nothing is trimmed, so the steady state
keeps the tuning's speed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from pathlib import Path
from typing import Any

__all__ = ["resident_mib", "trim_heap", "tune_allocator"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Larger than any single activation of the zoo models at batch 8; glibc builds that cap the mmap
# threshold at 32 MiB (the documented maximum on 64-bit) get that instead.
_MMAP_THRESHOLDS = (256 << 20, 32 << 20)
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20  # glibc's per-thread heap size (HEAP_MAX_SIZE on 64-bit)
_ARENA_MAX = 1

_lock = threading.Lock()
_applied: bool | None = None
_malloc_trim: Any = None  # glibc's malloc_trim once looked up; False where there is none


def tune_allocator() -> bool:
    """Apply the tuning once per process; returns whether it is in effect."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if os.environ.get("FPGASERVE_MALLOC_TUNING", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    # The process's own symbols (glibc is loaded), as trim_heap does: ctypes.util.find_library ran
    # ``ldconfig -p`` in a subprocess (about 5 ms) before the server's load thread could start.
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    if not any(mallopt(_M_MMAP_THRESHOLD, value) == 1 for value in _MMAP_THRESHOLDS):
        return False
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = ok and mallopt(_M_ARENA_MAX, _ARENA_MAX) == 1
    logger.debug("glibc malloc tuned for activation buffers: %s", ok)
    return bool(ok)


def trim_heap() -> bool:
    """Give the heap's free pages back to the kernel (glibc's ``malloc_trim(0)``); returns whether
    any were released (False where there is no glibc)."""
    global _malloc_trim
    if _malloc_trim is None:
        # The process's own symbols (glibc is loaded): no library search from a worker thread.
        glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
        _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False) if glibc else False
    if not _malloc_trim:
        return False
    return bool(_malloc_trim(ctypes.c_size_t(0)))


def resident_mib() -> float | None:
    """This process's resident set in MiB (``/proc/self/statm``), or None where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
