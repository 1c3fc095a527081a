"""Spike for issue 14: can an exact integer GEMM on BFP mantissas beat OpenBLAS's float32 sgemm here?

The emulated matrix unit multiplies BFP values: int16 mantissas (int12-bfp: sign + 11 bits) with one
exponent per block of 16 along the reduction axis. Today the executor dequantizes them to float32 and
calls OpenBLAS's sgemm. The integer form sums each block's 16 products exactly in int32 (AVX2's
vpmaddwd multiplies 16 int16 pairs per instruction, against 8 float32 multiply-adds for an FMA), then
adds ``float32(block sum) * 2**(e_a + e_w - 20)`` to a float32 accumulator, block after block.

For every GEMM shape of ResNet-50 and EfficientNet-Lite0 (224 x 224, one example), single-threaded,
thread CPU time, the candidates interleaved with sgemm in one run:

- ``sgemm``: OpenBLAS on the dequantized float32 operands, as ``fpgaserve.npu.gemm`` calls it;
- ``C``: ``bench/int_gemm.c`` (AVX2 intrinsics, the block's pair loop in inline asm), compiled here
  with gcc: the upper bound of what this CPU gives the integer form;
- ``numba``: ``bench/int_gemm_numba.py``, the same tile from numba through an LLVM intrinsic.

GFLOP/s-equiv counts ``2 * rows * K * N`` of the unpadded shape for every kernel (the integer kernels
also pay the padding of blocks and of columns to 16). Then, once on one shape: numpy's integer matmul
(no BLAS) and the plain numba loops LLVM vectorises by itself. And the exactness check: block sums
exact, results against a float64 reference next to sgemm's, and each row's bits independent of the
rows around it.

    python bench/int_gemm.py --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpgaserve.npu.bfp import decode, encode, get_format
from fpgaserve.npu.threads import blas_single_threaded

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import int_gemm_numba  # type: ignore[import-not-found]  # bench/ is not a package

FMT = get_format("int12-bfp")
# (rows per example, kernel taps, input channels, outputs): every conv and dense op of the networks
# at 224 x 224, as their programs list them (repeats included: the totals are per image).
RESNET50 = [
    (12544, 49, 3, 64),
    *[(3136, 1, 64, 64)], *[(3136, 9, 64, 64)] * 3, *[(3136, 1, 64, 256)] * 4, *[(3136, 1, 256, 64)] * 2,
    (784, 1, 256, 128), *[(784, 9, 128, 128)] * 4, (784, 1, 256, 512), *[(784, 1, 128, 512)] * 4,
    *[(784, 1, 512, 128)] * 3,
    (196, 1, 512, 256), *[(196, 9, 256, 256)] * 6, (196, 1, 512, 1024), *[(196, 1, 256, 1024)] * 6,
    *[(196, 1, 1024, 256)] * 5,
    (49, 1, 1024, 512), *[(49, 9, 512, 512)] * 3, (49, 1, 1024, 2048), *[(49, 1, 512, 2048)] * 3,
    *[(49, 1, 2048, 512)] * 2,
]  # fmt: skip
EFFICIENTNET_LITE0 = [
    (12544, 9, 3, 32), (12544, 1, 32, 16), (12544, 1, 16, 96), (3136, 1, 96, 24),
    *[(3136, 1, 24, 144)] * 2, (3136, 1, 144, 24), (784, 1, 144, 40), *[(784, 1, 40, 240)] * 2,
    (784, 1, 240, 40), (196, 1, 240, 80), *[(196, 1, 80, 480)] * 3, *[(196, 1, 480, 80)] * 2,
    (196, 1, 480, 112), *[(196, 1, 112, 672)] * 3, *[(196, 1, 672, 112)] * 2, (49, 1, 672, 192),
    *[(49, 1, 192, 1152)] * 4, *[(49, 1, 1152, 192)] * 3, (49, 1, 1152, 320), (49, 1, 320, 1280),
]  # fmt: skip
MODELS = {"resnet50": RESNET50, "efficientnet-lite0": EFFICIENTNET_LITE0}
Kernel = Callable[["Operands", np.ndarray], None]


@dataclass(frozen=True)
class Operands:
    """One GEMM's operands in both forms: dequantized floats for sgemm, mantissas for the integer kernels."""

    x: np.ndarray  # (rows, taps * cin) float32, the BFP values
    w: np.ndarray  # (taps * cin, cout) float32
    a: np.ndarray  # (rows, nb * bp * 2) int16 mantissas, blocks along the reduction
    sa: np.ndarray  # (rows, nb) float32 block scales 2**(e - 10)
    wp: np.ndarray  # (panels, nb, bp, 16, 2) int16: per 16 columns, each pair's (w[k], w[k+1])
    sw: np.ndarray  # (panels, nb, 16) float32
    bp: int  # pairs per block: 8, or fewer where the channels are fewer than 16 (the first conv)

    @property
    def flops(self) -> int:
        return int(2 * self.x.shape[0] * self.x.shape[1] * self.w.shape[1])


def operands(rows: int, taps: int, cin: int, cout: int, rng: np.random.Generator) -> Operands:
    """Random activations and weights, quantized along the input channels of each tap (the executor's
    blocks: a new block at every tap), in the layouts of bench/int_gemm.c."""
    x = rng.standard_normal((rows, taps, cin)).astype(np.float32)
    w = (rng.standard_normal((taps, cin, cout)) / np.sqrt(taps * cin)).astype(np.float32)
    ex, ew = encode(x, FMT, axis=-1), encode(w, FMT, axis=1)  # ew: (taps, cout, blocks * 16)
    per_tap = -(-cin // 16)
    # A block stores 16 lanes; a tap with fewer channels keeps only its whole pairs (3 -> 2 pairs).
    lanes = 16 if cin >= 16 else -(-cin // 2) * 2
    bp, nb, panels = lanes // 2, taps * per_tap, -(-cout // 16)
    a = ex.mantissas.reshape(rows, taps, per_tap, 16)[..., :lanes].reshape(rows, -1)
    wm = ew.mantissas.reshape(taps, cout, per_tap, 16)[..., :lanes].transpose(0, 2, 3, 1)
    wm = np.pad(wm.reshape(nb, bp, 2, cout), ((0, 0), (0, 0), (0, 0), (0, panels * 16 - cout)))
    sw = _scales(ew.exponents).transpose(0, 2, 1).reshape(nb, cout)
    sw = np.pad(sw, ((0, 0), (0, panels * 16 - cout)), constant_values=1.0)
    return Operands(
        x=decode(ex).reshape(rows, taps * cin),
        w=np.moveaxis(decode(ew), -1, 1).reshape(taps * cin, cout),
        a=np.ascontiguousarray(a),
        sa=_scales(ex.exponents).reshape(rows, nb),
        wp=np.ascontiguousarray(wm.reshape(nb, bp, 2, panels, 16).transpose(3, 0, 1, 4, 2)),
        sw=np.ascontiguousarray(sw.reshape(nb, panels, 16).transpose(1, 0, 2)),
        bp=bp,
    )


def _scales(exponents: np.ndarray) -> np.ndarray:
    return np.ldexp(np.float32(1.0), exponents.astype(np.int32) - (FMT.mantissa_bits - 1)).astype(np.float32)


def c_library() -> ctypes.CDLL | None:
    """bench/int_gemm.c, compiled once per source into the temp directory (None without gcc)."""
    source = Path(__file__).with_name("int_gemm.c")
    if shutil.which("gcc") is None:
        return None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    library = Path(tempfile.gettempdir()) / f"fpgaserve-int-gemm-{digest}.so"
    if not library.exists():
        scratch = library.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["gcc", "-O3", "-mavx2", "-mfma", "-shared", "-fPIC", "-o", str(scratch), str(source)], check=True
        )
        scratch.replace(library)
    return ctypes.CDLL(str(library))


def c_kernel(library: ctypes.CDLL) -> Kernel:
    fn = library.igemm
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_long]
    fn.argtypes += [ctypes.c_int, ctypes.c_long, ctypes.c_long]
    # The whole reduction at once; 12 rows (two register tiles) pass over every column panel before
    # the next 12: measured fastest on these shapes (1.03-1.3x the panel-outer order).
    whole, row_chunk = 1 << 40, 12

    def run(op: Operands, out: np.ndarray) -> None:
        rows, nb = op.sa.shape
        pointers = (op.a, op.sa, op.wp, op.sw, out)
        fn(*(p.ctypes.data for p in pointers), rows, nb, op.bp, op.wp.shape[0], 6, whole, row_chunk)

    return run


def tile_ceiling(library: ctypes.CDLL) -> None:
    """The register tile's arithmetic alone: int16 multiply-adds (vpmaddwd + vpaddd) against float32 FMAs."""
    library.madd_steps.argtypes = library.fma_steps.argtypes = [ctypes.c_long, ctypes.c_void_p]
    library.fma_steps.restype = ctypes.c_float
    pair, value = np.ones(1, np.int32), np.ones(1, np.float32)
    steps = 20_000_000
    rates: dict[str, list[float]] = {"madd": [], "fma": []}
    for _ in range(3):  # interleaved
        rates["madd"].append(
            12 * 16 * steps / thread_cpu(lambda: library.madd_steps(steps, pair.ctypes.data))
        )
        rates["fma"].append(12 * 8 * steps / thread_cpu(lambda: library.fma_steps(steps, value.ctypes.data)))
    madd, fma = (max(v) for v in rates.values())
    print(
        f"\nTile ceiling (12 accumulators from registers, one thread): vpmaddwd + vpaddd {madd / 1e9:.0f} G "
        f"int16 multiply-adds/s, vfmadd231ps {fma / 1e9:.0f} G float32/s: {madd / fma:.2f}x"
    )


def numba_kernel(op: Operands, out: np.ndarray) -> None:
    flat = (op.a.reshape(-1), op.sa.reshape(-1), op.wp.reshape(-1), op.sw.reshape(-1))
    int_gemm_numba.igemm_intrinsic(*flat, out, op.bp)


def thread_cpu(fn: Callable[[], object]) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def _runs(op: Operands, kernels: dict[str, Kernel]) -> dict[str, Callable[[], object]]:
    y = np.empty((op.x.shape[0], op.w.shape[1]), np.float32)
    runs: dict[str, Callable[[], object]] = {"sgemm": lambda: np.matmul(op.x, op.w, out=y)}
    for k, f in kernels.items():
        out = np.empty((op.x.shape[0], op.wp.shape[0] * 16), np.float32)
        runs[k] = lambda f=f, out=out: f(op, out)  # type: ignore[misc]
    return runs


def by_shape(name: str, kernels: dict[str, Kernel], repeats: int) -> None:
    """Per distinct shape: GFLOP/s-equiv of sgemm and of each kernel, interleaved; totals per image."""
    rng = np.random.default_rng(14)
    counts = Counter(MODELS[name])
    totals = dict.fromkeys(["sgemm", *kernels], 0.0)
    # What a lowering would run: the integer kernel where the blocks are whole (16 channels or more),
    # sgemm for a first conv on 3 channels, whose 2-pair blocks pay the per-block scaling 4 times as often.
    mixed = dict.fromkeys(kernels, 0.0)
    print(f"\n{name}, one example, one thread, median thread CPU of {repeats} interleaved runs")
    print("| rows x taps x cin x cout (count) | sgemm GFLOP/s | " + " | ".join(f"{k} GFLOP/s, x sgemm" for k in kernels) + " |")  # fmt: skip
    print("|---|---|" + "---|" * len(kernels))
    for shape, count in counts.items():
        op = operands(*shape, rng)
        runs = _runs(op, kernels)
        times: dict[str, list[float]] = {k: [] for k in runs}
        with blas_single_threaded():
            for fn in runs.values():
                fn()  # first touch, compilation
            for _ in range(repeats):
                for k, fn in runs.items():
                    times[k].append(thread_cpu(fn))
        median = {k: statistics.median(v) for k, v in times.items()}
        for k, t in median.items():
            totals[k] += count * t
        for k in kernels:
            mixed[k] += count * median[k if shape[2] >= 16 else "sgemm"]
        cells = " | ".join(
            f"{op.flops / median[k] / 1e9:.1f}, {median['sgemm'] / median[k]:.2f}x" for k in kernels
        )
        print(f"| {' x '.join(map(str, shape))} ({count}) | {op.flops / median['sgemm'] / 1e9:.1f} | {cells} |")  # fmt: skip
    flops = sum(2 * r * t * c * n for r, t, c, n in MODELS[name])
    cells = " | ".join(
        f"{flops / totals[k] / 1e9:.1f}, **{totals['sgemm'] / totals[k]:.2f}x**" for k in kernels
    )
    print(f"| all, per image: sgemm {totals['sgemm'] * 1e3:.1f} ms | {flops / totals['sgemm'] / 1e9:.1f} | {cells} |")  # fmt: skip
    cells = " | ".join(
        f"{flops / mixed[k] / 1e9:.1f}, **{totals['sgemm'] / mixed[k]:.2f}x**" for k in kernels
    )
    print(f"| all, sgemm where cin < 16 | | {cells} |")


def once(repeats: int) -> None:
    """numpy's integer matmul and numba's own vectorisation, on one shape, against sgemm."""
    op = operands(784, 9, 128, 128, np.random.default_rng(1))
    rows, nb = op.sa.shape
    a3 = op.a.reshape(rows, nb, 16).transpose(1, 0, 2).astype(np.int32)  # (nb, rows, 16)
    w3 = op.wp.transpose(1, 2, 4, 0, 3).reshape(nb, 16, -1).astype(np.int32)  # (nb, 16, cout)
    sw = op.sw.transpose(1, 0, 2).reshape(nb, -1)
    wt = np.ascontiguousarray(op.wp.transpose(0, 3, 1, 2, 4).reshape(-1, nb * 16))  # (cout, K)
    sw_t = np.ascontiguousarray(sw.T)
    out = np.empty((rows, wt.shape[0]), np.float32)

    def numpy_int() -> None:
        sums = np.matmul(a3, w3)  # (nb, rows, cout) int32, exact
        acc = np.zeros((rows, w3.shape[2]), np.float32)
        for b in range(nb):
            acc += sums[b].astype(np.float32) * (op.sa[:, b : b + 1] * sw[b])

    def autovec() -> None:
        int_gemm_numba.igemm_autovec(op.a, op.sa, wt, sw_t, out, 16)

    autovec()
    signature = int_gemm_numba.igemm_autovec.signatures[0]
    asm = Counter(re.findall(r"^\s+(v\w+)", int_gemm_numba.igemm_autovec.inspect_asm(signature), re.M))
    with blas_single_threaded():
        t = {k: statistics.median(thread_cpu(f) for _ in range(max(1, repeats // 2))) for k, f in
             (("sgemm", lambda: op.x @ op.w), ("numpy", numpy_int), ("autovec", autovec))}  # fmt: skip
    print("\nOnce, 784 x 9 x 128 x 128, one thread:")
    print(f"- numpy integer matmul per block + float32 scaling: {t['sgemm'] / t['numpy']:.3f}x sgemm")
    print(
        f"- numba's own vectorisation of the block dot product: {t['sgemm'] / t['autovec']:.3f}x sgemm "
        f"(its asm: {asm['vpmaddwd']} vpmaddwd, {asm['vpshufd']} vpshufd, {asm['vpinsrw']} vpinsrw)"
    )


def defined_bits(op: Operands) -> tuple[np.ndarray, float]:
    """The integer form by its definition, in numpy: exact int64 block sums, rounded to float32, times the
    block's power-of-two scale (exact), added in float32 block after block (an FMA whose product is exact
    rounds as this addition does); and the share of block sums above 2**24 (rounded by the conversion)."""
    rows, nb = op.sa.shape
    a3 = op.a.reshape(rows, nb, 2 * op.bp).transpose(1, 0, 2).astype(np.int64)
    w3 = op.wp.transpose(1, 2, 4, 0, 3).reshape(nb, 2 * op.bp, -1).astype(np.int64)
    sw = op.sw.transpose(1, 0, 2).reshape(nb, -1)
    acc = np.zeros((rows, w3.shape[2]), np.float32)
    above = 0
    for b in range(nb):
        sums = a3[b] @ w3[b]
        above += int(np.count_nonzero(np.abs(sums) > 1 << 24))
        acc += sums.astype(np.float32) * (op.sa[:, b : b + 1] * sw[b])
    return acc[:, : op.w.shape[1]], above / (nb * acc.size)


def exactness(kernels: dict[str, Kernel]) -> None:
    """Block sums exact; error against float64 next to sgemm's; a row's bits alone and among others."""
    rng = np.random.default_rng(5)
    print("\nExactness")
    # One block of extreme mantissas, unit scales: the kernel returns float32(exact int sum).
    a = rng.choice(np.array([-2047, 2047, -2046, 1023], np.int16), (64, 16))
    wmat = rng.choice(np.array([-2047, 2047, 2045], np.int16), (16, 32))
    op = Operands(
        x=a.astype(np.float32), w=wmat.astype(np.float32), a=a, sa=np.ones((64, 1), np.float32),
        wp=np.ascontiguousarray(wmat.reshape(1, 8, 2, 2, 16).transpose(3, 0, 1, 4, 2)),
        sw=np.ones((2, 1, 16), np.float32), bp=8,
    )  # fmt: skip
    exact = a.astype(np.int64) @ wmat.astype(np.int64)
    for k, f in kernels.items():
        out = np.empty((64, 32), np.float32)
        f(op, out)
        small = np.abs(exact) <= 1 << 24
        assert np.array_equal(out[small], exact[small].astype(np.float32)), k
        assert np.array_equal(out, exact.astype(np.float32)), k  # above 2**24: round to nearest, once
        print(
            f"- {k}: block sums of 16 extreme mantissas (|sum| up to {np.abs(exact).max():,}) equal the int64 "
            f"sums, exactly below 2**24 ({small.mean():.0%} of them), rounded once to float32 above"
        )
    for shape in ((784, 9, 128, 128), (49, 1, 2048, 512), (12544, 49, 3, 64)):
        op = operands(*shape, rng)
        reference = op.x.astype(np.float64) @ op.w.astype(np.float64)
        scale = np.abs(op.x).astype(np.float64) @ np.abs(op.w).astype(np.float64)  # the error's natural scale
        with blas_single_threaded():
            results = {"sgemm": op.x @ op.w}
        for k, f in kernels.items():
            out = np.empty((op.x.shape[0], op.wp.shape[0] * 16), np.float32)
            f(op, out)
            results[k] = out[:, : op.w.shape[1]]
            few = np.empty((7, out.shape[1]), np.float32)
            f(Operands(op.x[:7], op.w, op.a[:7].copy(), op.sa[:7].copy(), op.wp, op.sw, op.bp), few)
            assert np.array_equal(few, out[:7]), k  # a row's bits do not depend on the other rows
        defined, above = defined_bits(op)
        for k in kernels:
            assert np.array_equal(results[k], defined), k
        errors = ", ".join(f"{k} {np.max(np.abs(r - reference) / scale):.2e}" for k, r in results.items())
        differ = np.mean(defined != results["sgemm"])
        print(
            f"- {' x '.join(map(str, shape))}: max |error| / sum |products| against float64: {errors}; "
            f"{differ:.0%} of the outputs differ from sgemm's bits; block sums above 2**24: {above:.1e}"
        )
    print(
        "- the kernels give the numpy definition's bits on every shape, and every row's bits computed "
        "alone (7 rows) and among all rows (asserted)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-numba", action="store_true", help="only the C kernel beside sgemm")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    kernels: dict[str, Kernel] = {}
    library = c_library()
    if library is None:
        print("no gcc: the C kernel is skipped")
    else:
        tile_ceiling(library)
        kernels["C"] = c_kernel(library)
    if not args.no_numba:
        kernels["numba"] = numba_kernel
    exactness(kernels)
    for name in args.models:
        by_shape(name, kernels, args.repeats)
    once(args.repeats)
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
