/* Integer GEMM on BFP mantissas, AVX2 (bench/int_gemm.py compiles and loads it; issue 14 spike).

out[m, n] = sum over blocks b of  float(sum_{k in b} A[m, k] * W[k, n]) * sa[m, b] * sw[b, n]

A and W hold the signed int16 mantissas of a BFP format (int12-bfp: |mantissa| <= 2047), blocks along
the reduction axis; sa and sw are the blocks' scales 2**(e - (M - 1)) as float32. The sum within a
block is exact in int32 (vpmaddwd: 16 int16 products summed in pairs per instruction, then vpaddd);
the block sum is converted to float32 (exact below 2**24), scaled by a power of two (exact) and added
to a float32 accumulator with one FMA, block after block in order: each output's bits depend on its
row and column alone, never on the tiling, the number of rows or the threads.

Layouts (the Python side packs them):
  A   int16 [M][nb * bp * 2]          row-major; a block is bp pairs of consecutive k
  sa  float [M][nb]
  W   int16 [np][nb][bp][16][2]       per panel of 16 columns: for each pair, 16 (w[k], w[k+1]) pairs
  sw  float [np][nb][16]
  out float [M][np * 16]
Register tile: 6 rows x 16 columns, 12 ymm int32 accumulators per block (block6, inline asm); the
float accumulators live in the output tile, read and written once per block. Tails of fewer rows use
the intrinsics version (micro1..micro5), where gcc's register allocation does not matter much.
*/
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define MICRO(R)                                                                                      \
    static inline __attribute__((always_inline)) void micro##R(                                       \
        const int16_t *a, long lda, const float *sa, long nb, const int16_t *w, const float *sw,     \
        float *c, long ldc, long b0, long b1, int bp, int first) {                                    \
        if (first)                                                                                    \
            for (int r = 0; r < R; r++) {                                                             \
                _mm256_storeu_ps(c + r * ldc, _mm256_setzero_ps());                                   \
                _mm256_storeu_ps(c + r * ldc + 8, _mm256_setzero_ps());                               \
            }                                                                                         \
        for (long b = b0; b < b1; b++) {                                                              \
            __m256i acc[R][2];                                                                        \
            for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();              \
            const int16_t *wb = w + b * bp * 32;                                                      \
            const int16_t *ab = a + b * bp * 2;                                                       \
            _Pragma("GCC unroll 1") for (int p = 0; p < bp; p++) {                                    \
                __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + p * 32));                      \
                __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + p * 32 + 16));                 \
                for (int r = 0; r < R; r++) {                                                         \
                    int32_t pair;                                                                     \
                    memcpy(&pair, ab + r * lda + 2 * p, 4);                                           \
                    __m256i x = _mm256_set1_epi32(pair);                                              \
                    __m256i m0 = _mm256_madd_epi16(x, w0), m1 = _mm256_madd_epi16(x, w1);             \
                    acc[r][0] = _mm256_add_epi32(acc[r][0], m0);                                     \
                    acc[r][1] = _mm256_add_epi32(acc[r][1], m1);                                     \
                }                                                                                     \
            }                                                                                         \
            /* the float accumulators live in the output tile (L1): 12 int32 accumulators and the   \
               operands fill the 16 ymm registers */                                                  \
            __m256 s0 = _mm256_loadu_ps(sw + b * 16), s1 = _mm256_loadu_ps(sw + b * 16 + 8);          \
            for (int r = 0; r < R; r++) {                                                             \
                __m256 s = _mm256_broadcast_ss(sa + r * nb + b);                                      \
                float *cr = c + r * ldc;                                                              \
                _mm256_storeu_ps(cr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(s, s0), \
                                                     _mm256_loadu_ps(cr)));                           \
                _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][1]),              \
                                                         _mm256_mul_ps(s, s1), _mm256_loadu_ps(cr + 8))); \
            }                                                                                         \
        }                                                                                             \
    }


/* Six rows x 16 columns, the pairs of one block: gcc spills the 12 int32 accumulators of the C
   version (it keeps too many broadcasts live), so this loop is written out. ymm12-13 hold the pair's
   weights, ymm14 the broadcast pair of a row, ymm15 a product. */
static inline __attribute__((always_inline)) void block6(__m256i acc[6][2], const int16_t *a, long lda,
                                                         const int16_t *w, long pairs) {
    long stride = lda * 2;
#define ROW(base, idx, i)                                                                             \
    "vpbroadcastd " base ", %%ymm14\n\t"                                                              \
    "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"                                                          \
    "vpaddd %%ymm15, %[c" #i "0], %[c" #i "0]\n\t"                                                    \
    "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"                                                          \
    "vpaddd %%ymm15, %[c" #i "1], %[c" #i "1]\n\t"
    __asm__ volatile(
        "lea (%[a],%[s],2), %%r11\n\t"
        "add %[s], %%r11\n\t"
        "vpxor %[c00], %[c00], %[c00]\n\tvpxor %[c01], %[c01], %[c01]\n\t"
        "vpxor %[c10], %[c10], %[c10]\n\tvpxor %[c11], %[c11], %[c11]\n\t"
        "vpxor %[c20], %[c20], %[c20]\n\tvpxor %[c21], %[c21], %[c21]\n\t"
        "vpxor %[c30], %[c30], %[c30]\n\tvpxor %[c31], %[c31], %[c31]\n\t"
        "vpxor %[c40], %[c40], %[c40]\n\tvpxor %[c41], %[c41], %[c41]\n\t"
        "vpxor %[c50], %[c50], %[c50]\n\tvpxor %[c51], %[c51], %[c51]\n\t"
        "1:\n\t"
        "vmovdqu (%[w]), %%ymm12\n\t"
        "vmovdqu 32(%[w]), %%ymm13\n\t"
        ROW("(%[a])", 0, 0)
        ROW("(%[a],%[s],1)", 1, 1)
        ROW("(%[a],%[s],2)", 2, 2)
        ROW("(%%r11)", 3, 3)
        ROW("(%%r11,%[s],1)", 4, 4)
        ROW("(%%r11,%[s],2)", 5, 5)
        "add $64, %[w]\n\t"
        "add $4, %[a]\n\t"
        "add $4, %%r11\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [c00] "=&x"(acc[0][0]), [c01] "=&x"(acc[0][1]), [c10] "=&x"(acc[1][0]), [c11] "=&x"(acc[1][1]),
          [c20] "=&x"(acc[2][0]), [c21] "=&x"(acc[2][1]), [c30] "=&x"(acc[3][0]), [c31] "=&x"(acc[3][1]),
          [c40] "=&x"(acc[4][0]), [c41] "=&x"(acc[4][1]), [c50] "=&x"(acc[5][0]), [c51] "=&x"(acc[5][1]),
          [a] "+r"(a), [w] "+r"(w), [n] "+r"(pairs)
        : [s] "r"(stride)
        : "r11", "ymm12", "ymm13", "ymm14", "ymm15", "memory", "cc");
#undef ROW
}

static void micro6asm(const int16_t *a, long lda, const float *sa, long nb, const int16_t *w, const float *sw,
                      float *c, long ldc, long b0, long b1, int bp, int first) {
    if (first)
        for (int r = 0; r < 6; r++) {
            _mm256_storeu_ps(c + r * ldc, _mm256_setzero_ps());
            _mm256_storeu_ps(c + r * ldc + 8, _mm256_setzero_ps());
        }
    for (long b = b0; b < b1; b++) {
        __m256i acc[6][2];
        block6(acc, a + b * bp * 2, lda, w + b * bp * 32, bp);
        __m256 s0 = _mm256_loadu_ps(sw + b * 16), s1 = _mm256_loadu_ps(sw + b * 16 + 8);
        for (int r = 0; r < 6; r++) {
            __m256 s = _mm256_broadcast_ss(sa + r * nb + b);
            float *cr = c + r * ldc;
            _mm256_storeu_ps(cr, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(s, s0),
                                                 _mm256_loadu_ps(cr)));
            _mm256_storeu_ps(cr + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][1]), _mm256_mul_ps(s, s1),
                                                     _mm256_loadu_ps(cr + 8)));
        }
    }
}

MICRO(1)
MICRO(2)
MICRO(3)
MICRO(4)
MICRO(5)

/* bp == 8 (blocks of 16) gets its own copy, specialised for the constant. */
static inline __attribute__((always_inline)) void tile(int rows, const int16_t *a, long lda, const float *sa,
                                                       long nb, const int16_t *w, const float *sw, float *c,
                                                       long ldc, long b0, long b1, int bp, int first) {
    switch (rows) {
    case 1: micro1(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    case 2: micro2(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    case 3: micro3(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    case 4: micro4(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    case 5: micro5(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    default: micro6asm(a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first); break;
    }
}

static void tile8(int rows, const int16_t *a, long lda, const float *sa, long nb, const int16_t *w,
                  const float *sw, float *c, long ldc, long b0, long b1, int first) {
    tile(rows, a, lda, sa, nb, w, sw, c, ldc, b0, b1, 8, first);
}

static void tile_any(int rows, const int16_t *a, long lda, const float *sa, long nb, const int16_t *w,
                     const float *sw, float *c, long ldc, long b0, long b1, int bp, int first) {
    tile(rows, a, lda, sa, nb, w, sw, c, ldc, b0, b1, bp, first);
}

/* rows_per_tile: the register tile's rows (1..6); kb: blocks per reduction chunk; mc: rows per
   chunk that stay in cache while every column panel passes over them. */
void igemm(const int16_t *a, const float *sa, const int16_t *w, const float *sw, float *out, long m, long nb,
           int bp, long npanel, int rows_per_tile, long kb, long mc) {
    long lda = nb * bp * 2, ldc = npanel * 16;
    for (long b0 = 0; b0 < nb; b0 += kb) {
        long b1 = b0 + kb < nb ? b0 + kb : nb;
        for (long m0 = 0; m0 < m; m0 += mc) {
            long m1 = m0 + mc < m ? m0 + mc : m;
            for (long p = 0; p < npanel; p++) {
                const int16_t *wp = w + p * nb * bp * 32;
                const float *swp = sw + p * nb * 16;
                for (long i = m0; i < m1; i += rows_per_tile) {
                    int rows = (int)(m1 - i < rows_per_tile ? m1 - i : rows_per_tile);
                    if (bp == 8)
                        tile8(rows, a + i * lda, lda, sa + i * nb, nb, wp, swp, out + i * ldc + p * 16, ldc,
                              b0, b1, b0 == 0);
                    else
                        tile_any(rows, a + i * lda, lda, sa + i * nb, nb, wp, swp, out + i * ldc + p * 16, ldc,
                                 b0, b1, bp, b0 == 0);
                }
            }
        }
    }
}

/* The register tile's arithmetic alone, from registers: 12 accumulators, per step one broadcast and
   either 12 vpmaddwd + 12 vpaddd (16 int16 multiply-adds each) or 12 vfmadd231ps (8 float32 each).
   bench/int_gemm.py times both to give this CPU's ceiling for the integer form. */
#define PEAK_DECL(T, Z) T c0 = Z, c1 = Z, c2 = Z, c3 = Z, c4 = Z, c5 = Z, c6 = Z, c7 = Z, c8 = Z, c9 = Z, c10 = Z, c11 = Z
#define PEAK_OUTS                                                                                     \
    [c0] "+x"(c0), [c1] "+x"(c1), [c2] "+x"(c2), [c3] "+x"(c3), [c4] "+x"(c4), [c5] "+x"(c5),        \
        [c6] "+x"(c6), [c7] "+x"(c7), [c8] "+x"(c8), [c9] "+x"(c9), [c10] "+x"(c10), [c11] "+x"(c11)

int madd_steps(long n, const int32_t *pair) {
    PEAK_DECL(__m256i, _mm256_setzero_si256());
    __m256i w0 = _mm256_set1_epi32(3), w1 = _mm256_set1_epi32(5);
#define MADD(x, y)                                                                                    \
    "vpbroadcastd (%[p]), %%ymm14\n\t"                                                                \
    "vpmaddwd %[w0], %%ymm14, %%ymm15\n\tvpaddd %%ymm15, %[" #x "], %[" #x "]\n\t"                   \
    "vpmaddwd %[w1], %%ymm14, %%ymm15\n\tvpaddd %%ymm15, %[" #y "], %[" #y "]\n\t"
    for (long i = 0; i < n; i++)
        __asm__ volatile(MADD(c0, c1) MADD(c2, c3) MADD(c4, c5) MADD(c6, c7) MADD(c8, c9) MADD(c10, c11)
                         : PEAK_OUTS
                         : [w0] "x"(w0), [w1] "x"(w1), [p] "r"(pair)
                         : "ymm14", "ymm15", "memory");
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(c0, c5), c11);
    return _mm256_extract_epi32(s, 0);
}

float fma_steps(long n, const float *value) {
    PEAK_DECL(__m256, _mm256_setzero_ps());
    __m256 w0 = _mm256_set1_ps(1.0f), w1 = _mm256_set1_ps(0.5f);
#define FMA(x, y)                                                                                     \
    "vbroadcastss (%[p]), %%ymm14\n\t"                                                                \
    "vfmadd231ps %[w0], %%ymm14, %[" #x "]\n\tvfmadd231ps %[w1], %%ymm14, %[" #y "]\n\t"
    for (long i = 0; i < n; i++)
        __asm__ volatile(FMA(c0, c1) FMA(c2, c3) FMA(c4, c5) FMA(c6, c7) FMA(c8, c9) FMA(c10, c11)
                         : PEAK_OUTS
                         : [w0] "x"(w0), [w1] "x"(w1), [p] "r"(value)
                         : "ymm14", "memory");
    __m256 s = _mm256_add_ps(_mm256_add_ps(c0, c5), c11);
    return _mm256_cvtss_f32(s);
}
