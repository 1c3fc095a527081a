"""Compile every numba kernel signature the executor (and the host resize) uses, into numba's cache.

Role: ``fpgaserve warm-kernels`` (the Dockerfile runs it at image build time, see
``kernel_cache``) so that a first start loads the kernels instead of compiling them for seconds.

The executor reaches numba only through the wrappers of ``kernels_numba``, which normalise what they
pass (C-contiguous float32 arrays, ``int`` scalars; the executor copies a read-only input batch), so
each kernel has one signature. What differs between formats is the window quantizer's block size, a
compile-time constant: one entry per block size. Calling every wrapper once per format on small
arrays therefore compiles (or loads) everything a program in any preset format, or a mix of them,
can run; ``tests/npu/test_kernel_cache.py`` checks that whole programs then compile nothing.

A first start that compiles kernels is a long silence, so ``announce_compiling`` (``fpgaserve
serve``) says so when numba actually starts compiling one, and nothing when every kernel loads from
numba's cache (``quickstart`` passes the line on from its server's log).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COLD_START_CPU_SECONDS",
    "COMPILING",
    "WarmReport",
    "announce_compiling",
    "warm_kernels",
]

# CPU time to compile the kernels of one format and the host resize, measured with
# `fpgaserve warm-kernels --format int12-bfp` into an empty cache (docs/benchmarks.md).
COLD_START_CPU_SECONDS = 10  # 9.1 s on 2026-12-08, after the kernels lost prange (25 s before)
COMPILING = (
    f"compiling the emulator's kernels for this CPU: once, about {COLD_START_CPU_SECONDS} s of CPU "
    "(longer on a busy machine); later starts load them from numba's cache"
)


@dataclass(frozen=True)
class WarmReport:
    """What ``warm_kernels`` did: per kernel, signatures loaded from the cache and compiled."""

    cache_dir: str
    cpu: str
    formats: tuple[str, ...]
    seconds: float
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    cache_paths: tuple[str, ...] = ()

    @property
    def loaded(self) -> int:
        return sum(hits for hits, _ in self.counts.values())

    @property
    def compiled(self) -> int:
        return sum(misses for _, misses in self.counts.values())

    def describe(self) -> dict[str, Any]:
        return {
            "cacheDir": self.cache_dir,
            "cpu": self.cpu,
            "formats": list(self.formats),
            "seconds": round(self.seconds, 3),
            "loaded": self.loaded,
            "compiled": self.compiled,
            "kernels": {name: {"loaded": h, "compiled": m} for name, (h, m) in sorted(self.counts.items())},
        }


def _exercise(k: Any, fmt: Any) -> None:
    """Call every wrapper of ``kernels_numba`` once in ``fmt``, as the executor's steps do."""
    import numpy as np

    rng = np.random.default_rng(0)
    c = 2 * fmt.block_size + 3  # full blocks and a partial one
    x = rng.standard_normal((1, 3, 3, c)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    k.quantize_window(x, fmt)
    xp = k.quantize_window(x, fmt, stride=2, pads=(1, 1, 1, 1))
    cols = k.im2col(xp, kh=3, kw=3, stride=1, out_h=1, out_w=1)
    w = rng.standard_normal((3, 3, c)).astype(np.float32)
    for quantize_output in (False, True):
        k.depthwise_conv(
            x, w, fmt, stride=1, out_h=3, out_w=3, pads=(1, 1, 1, 1), bias=bias, activation="relu6",
            quantize_output=quantize_output, output_fmt=fmt,
        )  # fmt: skip
    k.bias_activation(cols.copy(), None, "relu")
    k.bias_activation(cols[:, :c].copy(), bias, "linear")
    k.add_activation(x, x, "relu")
    # Whole blocks of 16 have a kernel of their own (numba_bfp._window16).
    k.quantize_window(np.ascontiguousarray(x[..., : 2 * fmt.block_size]), fmt)


def _host_cpu() -> str:
    from numba.core.registry import cpu_target

    triple, name, features = cpu_target.target_context.codegen().magic_tuple()
    return f"{triple} {name} ({len([f for f in features.split(',') if f.startswith('+')])} features)"


def warm_kernels(*, formats: Iterable[Any] | None = None) -> WarmReport:
    """Compile (or load) every kernel signature of ``formats`` (default: every preset) into numba's
    cache directory (``NUMBA_CACHE_DIR``, read when numba is first imported)."""
    from fpgaserve.npu import kernels_numba as k
    from fpgaserve.npu.formats import FORMATS

    chosen = tuple(formats) if formats is not None else tuple(FORMATS.values())
    start = time.perf_counter()
    for fmt in chosen:
        _exercise(k, fmt)
    # The host preprocessing stage's resize (runtime.host_stages): a serving pod runs it first.
    import numpy as np

    from fpgaserve.runtime import host_stages

    host_stages.bicubic_resize(np.zeros((5, 7, 3), np.uint8), height=3, width=4)
    seconds = time.perf_counter() - start
    blocks = tuple(sorted({fmt.block_size for fmt in chosen}))
    from fpgaserve.npu.kernel_cache import cache_counts

    dispatchers = {**k.dispatchers(block_sizes=blocks), **host_stages.dispatchers()}
    counts = {name: c for name, c in cache_counts(dispatchers).items() if c != (0, 0)}
    paths = tuple(sorted({str(d.stats.cache_path) for name, d in dispatchers.items() if name in counts}))
    import numba

    return WarmReport(
        cache_dir=str(getattr(numba.config, "CACHE_DIR", "") or ""),
        cpu=_host_cpu(),
        formats=tuple(fmt.name for fmt in chosen),
        seconds=seconds,
        counts=counts,
        cache_paths=paths,
    )


def announce_compiling(say: Callable[[str], None]) -> None:
    """From now on, the first time numba compiles a function in this process (a cache miss: a load
    from the cache is no compile), call ``say(COMPILING)``; once per process, from the compiling
    thread. numba's ``numba:compile`` event marks exactly those compiles."""
    from numba.core import event

    lock = threading.Lock()
    said: list[bool] = []

    class _FirstCompile(event.Listener):  # type: ignore[misc]  # numba is untyped
        def on_start(self, ev: Any) -> None:
            with lock:
                if said:
                    return
                said.append(True)
            say(COMPILING)

        def on_end(self, ev: Any) -> None:
            pass

    event.register("numba:compile", _FirstCompile())  # type: ignore[no-untyped-call]
