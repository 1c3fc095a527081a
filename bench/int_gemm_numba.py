"""numba integer GEMMs on BFP mantissas for ``bench/int_gemm.py`` (issue 14 spike; not used by fpgaserve).

Two kernels over the layouts of ``bench/int_gemm.c`` (A: int16 rows of blocks of ``bp`` pairs, W: per
panel of 16 columns, for each pair the 16 columns' (w[k], w[k+1]) pairs; float32 scales of each
block):

- ``igemm_intrinsic``: register-blocked like the C kernel (6 rows x 16 columns, 12 int32 ymm
  accumulators per block) with the block's multiply-adds emitted as LLVM IR through
  ``numba.extending.intrinsic``: ``llvm.x86.avx2.pmadd.wd`` is vpmaddwd. LLVM's auto-vectoriser never
  forms this tile from plain numba loops (``igemm_autovec`` shows what it does instead), so the
  intrinsic is the only way found to get it from numba. Needs AVX2.
- ``igemm_autovec``: the obvious numba loops, an int32 dot product per block. LLVM vectorises the
  block's 16 products into a vpmaddwd but then sums its 8 lanes for every block of every output.

Both give the same bits as the C kernel: the block's exact int32 sum, converted to float32, times
``sa * sw`` (a power of two) added with one FMA, block after block.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["igemm_autovec", "igemm_intrinsic"]

ROWS = 6  # rows of the register tile: 12 accumulators + 2 weight vectors + 1 broadcast + 1 product

_I16, _I32, _F32 = ir.IntType(16), ir.IntType(32), ir.FloatType()
_V16I16, _V8I32, _V8F32 = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8), ir.VectorType(_F32, 8)


def _vector_at(builder: Any, base: Any, offset: Any, vtype: Any) -> Any:
    return builder.bitcast(builder.gep(base, [offset]), vtype.as_pointer())


def _splat(builder: Any, value: Any, vtype: Any) -> Any:
    one = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, vtype.count), [0] * vtype.count)
    return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined), mask)


def _make_block(rows: int) -> Any:
    """An intrinsic: ``rows`` x 16 outputs over all ``nb`` blocks, each block's int32 sums scaled into them."""

    @intrinsic  # type: ignore[misc]
    def block(typingctx: Any, a: Any, a_off: Any, lda: Any, w: Any, w_off: Any, pairs: Any,
              sa: Any, sa_off: Any, nb: Any, sw: Any, sw_off: Any, out: Any, out_off: Any, ldc: Any) -> Any:  # fmt: skip
        sig = types.void(a, a_off, lda, w, w_off, pairs, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> None:
            a_arr, a_off, lda, w_arr, w_off, pairs, sa_arr, sa_off, nb, sw_arr, sw_off, o_arr, o_off, ldc = (
                args
            )
            aty, wty, saty, swty, oty = (signature.args[i] for i in (0, 3, 6, 9, 11))
            a_ptr = context.make_array(aty)(context, builder, a_arr).data
            w_ptr = context.make_array(wty)(context, builder, w_arr).data
            sa_ptr = context.make_array(saty)(context, builder, sa_arr).data
            sw_ptr = context.make_array(swty)(context, builder, sw_arr).data
            o_ptr = context.make_array(oty)(context, builder, o_arr).data
            intp = a_off.type
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]), "llvm.x86.avx2.pmadd.wd"
            )  # type: ignore[no-untyped-call]
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V8F32, [_V8F32, _V8F32, _V8F32]), "llvm.fma.v8f32"
            )  # type: ignore[no-untyped-call]
            accs = [cgutils.alloca_once(builder, _V8I32) for _ in range(2 * rows)]  # type: ignore[no-untyped-call]  # SROA: registers
            with cgutils.for_range(builder, nb) as blocks:
                b = blocks.index
                for acc in accs:
                    builder.store(ir.Constant(_V8I32, None), acc)
                w_b = builder.add(w_off, builder.mul(builder.mul(b, pairs), ir.Constant(intp, 32)))
                a_b = builder.add(a_off, builder.mul(builder.mul(b, pairs), ir.Constant(intp, 2)))
                with cgutils.for_range(builder, pairs) as loop:
                    p = loop.index
                    w_at = builder.add(w_b, builder.mul(p, ir.Constant(intp, 32)))
                    wv = [
                        builder.load(_vector_at(builder, w_ptr, builder.add(w_at, ir.Constant(intp, 16 * j)), _V16I16), align=2)
                        for j in (0, 1)
                    ]  # fmt: skip
                    a_at = builder.add(a_b, builder.mul(p, ir.Constant(intp, 2)))
                    for r in range(rows):
                        at = builder.add(a_at, builder.mul(lda, ir.Constant(intp, r)))
                        pair = builder.load(
                            builder.bitcast(builder.gep(a_ptr, [at]), _I32.as_pointer()), align=2
                        )
                        x = builder.bitcast(_splat(builder, pair, _V8I32), _V16I16)
                        for j in (0, 1):
                            acc = accs[2 * r + j]
                            builder.store(
                                builder.add(builder.load(acc), builder.call(pmadd, [x, wv[j]])), acc
                            )
                sw_b = builder.add(sw_off, builder.mul(b, ir.Constant(intp, 16)))
                sws = [builder.load(_vector_at(builder, sw_ptr, builder.add(sw_b, ir.Constant(intp, 8 * j)), _V8F32), align=4) for j in (0, 1)]  # fmt: skip
                for r in range(rows):
                    s_at = builder.add(builder.add(sa_off, b), builder.mul(nb, ir.Constant(intp, r)))
                    s8 = _splat(builder, builder.load(builder.gep(sa_ptr, [s_at])), _V8F32)
                    for j in (0, 1):
                        at = builder.add(
                            o_off,
                            builder.add(builder.mul(ldc, ir.Constant(intp, r)), ir.Constant(intp, 8 * j)),
                        )
                        ptr = _vector_at(builder, o_ptr, at, _V8F32)
                        total = builder.sitofp(builder.load(accs[2 * r + j]), _V8F32)
                        scale = builder.fmul(s8, sws[j])
                        builder.store(
                            builder.call(fma, [total, scale, builder.load(ptr, align=4)]), ptr, align=4
                        )

        return sig, codegen

    return block


_BLOCKS = tuple(_make_block(r) for r in range(1, ROWS + 1))
_b1, _b2, _b3, _b4, _b5, _b6 = _BLOCKS


@numba.njit(nogil=True, boundscheck=False)  # type: ignore[misc]
def _tile(rows, a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc):  # type: ignore[no-untyped-def]
    if rows == 6:
        _b6(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)
    elif rows == 5:
        _b5(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)
    elif rows == 4:
        _b4(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)
    elif rows == 3:
        _b3(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)
    elif rows == 2:
        _b2(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)
    else:
        _b1(a, a_off, lda, w, w_off, bp, sa, sa_off, nb, sw, sw_off, out, out_off, ldc)


@numba.njit(nogil=True, boundscheck=False)  # type: ignore[misc]
def igemm_intrinsic(a, sa, w, sw, out, bp):  # type: ignore[no-untyped-def]
    """``out = A @ W`` by blocks; a, sa, w, sw, out flat (C layouts of int_gemm.c), out (m, panels*16)."""
    m, nb = out.shape[0], sa.shape[0] // out.shape[0]
    ldc = out.shape[1]
    npan = ldc // 16
    lda = nb * bp * 2
    flat = out.reshape(-1)
    flat[:] = 0.0
    for i0 in range(0, m, 2 * ROWS):  # two register tiles of rows over every panel (as in int_gemm.c)
        for pnl in range(npan):
            for i in range(i0, min(m, i0 + 2 * ROWS), ROWS):
                rows = min(ROWS, m - i)
                _tile(rows, a, i * lda, lda, w, pnl * nb * bp * 32, bp,
                      sa, i * nb, nb, sw, pnl * nb * 16, flat, i * ldc + pnl * 16, ldc)  # fmt: skip


@numba.njit(nogil=True, boundscheck=False, error_model="numpy")  # type: ignore[misc]
def igemm_autovec(a, sa, wt, sw, out, blen):  # type: ignore[no-untyped-def]
    """The plain loops: a (m, K) and wt (n, K) int16 mantissas, sa (m, nb) and sw (n, nb) scales."""
    m = a.shape[0]
    n, nb = sw.shape
    for i in range(m):
        for j in range(n):
            f = np.float32(0.0)
            for b in range(nb):
                s = np.int32(0)
                for k in range(b * blen, b * blen + blen):  # a run-time length: LLVM vectorises it
                    s = np.int32(
                        s + np.int32(np.int32(a[i, k]) * np.int32(wt[j, k]))
                    )  # numba widens to int64
                f += np.float32(s) * (sa[i, b] * sw[j, b])
            out[i, j] = f
