/* Fused embedding gather + dot interaction of the int8 recipe (quant/recipe.py), one pair at a time.
 *
 * Per pair b: the 27 int8 vectors (the dense vector, then table t's row ids[b, t] + offsets[t]) are widened to
 * int16 once; the 351 lower-triangle dots (order (1,0), (2,0), (2,1), ...) are exact int32 sums that the
 * compiler turns into vpmaddwd; each is requantized as round_half_even(float(dot) * mult[p]), clamped to
 * [-127, 127], and written as its positive part and its negative part (both in [0, 127]) so that the next
 * GEMM sees only unsigned 7-bit inputs.
 *
 * Row layout of `out` (uint8, `out_stride` bytes a row): [0, 128) dense, [128, 479) max(q, 0),
 * [479, 830) max(-q, 0), [830, out_stride) zero.
 *
 * Returns -1 when every id was in range; else the index (within [lo, hi)) of the first pair with an id < 0 or
 * >= rows[t], whose output row is left unwritten.
 *
 * dlrm_interaction_hot is the same with a hot/cold store (engines/cpu/table_store.py): global row g is read from
 * hot + remap[g] * DIM when remap[g] >= 0 (a compact copy in RAM), else from tables + g * DIM (the memory-mapped
 * file). The bytes are the same either way, so the output is too.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DIM 128
#define TABLES 26
#define VECTORS (TABLES + 1)
#define DOTS (VECTORS * (VECTORS - 1) / 2)

static int32_t dot16(const int16_t *restrict a, const int16_t *restrict b) {
    int32_t acc = 0;
    for (int k = 0; k < DIM; k++) acc += (int32_t)a[k] * (int32_t)b[k];
    return acc;
}

static uint8_t clamp127(float x) {
    return (uint8_t)(x > 127.0f ? 127.0f : x);
}

/* Requantize one dot (exact int32) and write its positive and negative parts. */
static void emit(int32_t dot, float mult, uint8_t *pos, uint8_t *neg) {
    float q = nearbyintf((float)dot * mult);
    *pos = q > 0.0f ? clamp127(q) : 0;
    *neg = q < 0.0f ? clamp127(-q) : 0;
}

#ifdef __AVX2__
#include <immintrin.h>

/* Dots of v[i] with v[j .. j + 3], each an exact int32 sum over 128 int16 products. Returns [4] in an xmm. */
static __m128i dot16x4(const int16_t *vi, const int16_t *vj) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int k = 0; k < DIM; k += 16) {
        __m256i x = _mm256_load_si256((const __m256i *)(vi + k));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(x, _mm256_load_si256((const __m256i *)(vj + k))));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(x, _mm256_load_si256((const __m256i *)(vj + DIM + k))));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(x, _mm256_load_si256((const __m256i *)(vj + 2 * DIM + k))));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(x, _mm256_load_si256((const __m256i *)(vj + 3 * DIM + k))));
    }
    __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* All dots of row i (with rows 0 .. i-1), requantized: 4 at a time, then the rest one by one. */
static void row_dots(int16_t v[][DIM], int i, const float *mult, uint8_t *pos, uint8_t *neg) {
    const __m128 lim = _mm_set1_ps(127.0f), zero = _mm_setzero_ps();
    int j = 0;
    for (; j + 4 <= i; j += 4) {
        __m128 q = _mm_mul_ps(_mm_cvtepi32_ps(dot16x4(v[i], v[j])), _mm_loadu_ps(mult + j));
        q = _mm_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m128i p = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(q, zero), lim));
        __m128i n = _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(_mm_sub_ps(zero, q), zero), lim));
        p = _mm_packus_epi16(_mm_packs_epi32(p, p), p);
        n = _mm_packus_epi16(_mm_packs_epi32(n, n), n);
        int32_t pw = _mm_cvtsi128_si32(p), nw = _mm_cvtsi128_si32(n);
        memcpy(pos + j, &pw, 4);
        memcpy(neg + j, &nw, 4);
    }
    for (; j < i; j++) emit(dot16(v[i], v[j]), mult[j], pos + j, neg + j);
}
#else
static void row_dots(int16_t v[][DIM], int i, const float *mult, uint8_t *pos, uint8_t *neg) {
    for (int j = 0; j < i; j++) emit(dot16(v[i], v[j]), mult[j], pos + j, neg + j);
}
#endif

static void widen_u8(const uint8_t *restrict src, int16_t *restrict dst) {
    for (int k = 0; k < DIM; k++) dst[k] = (int16_t)src[k];
}

static void widen_s8(const int8_t *restrict src, int16_t *restrict dst) {
    for (int k = 0; k < DIM; k++) dst[k] = (int16_t)src[k];
}

/* Row g of the tables: from the hot copy when remap says so (remap NULL: every row from `tables`). */
static inline const int8_t *row_at(const int8_t *tables, const int8_t *hot, const int32_t *remap, int64_t g) {
    if (remap) {
        int32_t r = remap[g];
        if (r >= 0) return hot + (int64_t)r * DIM;
    }
    return tables + g * DIM;
}

static inline int64_t interaction(const int8_t *tables, const int8_t *hot, const int32_t *remap,
                                  const int64_t *offsets, const int64_t *rows, const int32_t *ids,
                                  const uint8_t *dense, const float *mult, uint8_t *out, int64_t out_stride,
                                  int64_t lo, int64_t hi) {
    int16_t v[VECTORS][DIM] __attribute__((aligned(64)));
    for (int64_t b = lo; b < hi; b++) {
        const int32_t *id = ids + b * TABLES;
        for (int t = 0; t < TABLES; t++) {
            if (id[t] < 0 || (int64_t)id[t] >= rows[t]) return b - lo;
        }
        const uint8_t *d = dense + b * DIM;
        widen_u8(d, v[0]);
        for (int t = 0; t < TABLES; t++)
            widen_s8(row_at(tables, hot, remap, offsets[t] + (int64_t)id[t]), v[t + 1]);
        uint8_t *o = out + b * out_stride;
        memcpy(o, d, DIM);
        uint8_t *pos = o + DIM, *neg = o + DIM + DOTS;
        for (int i = 1, p = 0; i < VECTORS; p += i, i++) row_dots(v, i, mult + p, pos + p, neg + p);
        memset(o + DIM + 2 * DOTS, 0, (size_t)(out_stride - DIM - 2 * DOTS));
    }
    return -1;
}

int64_t dlrm_interaction(const int8_t *tables, const int64_t *offsets, const int64_t *rows, const int32_t *ids,
                         const uint8_t *dense, const float *mult, uint8_t *out, int64_t out_stride,
                         int64_t lo, int64_t hi) {
    return interaction(tables, NULL, NULL, offsets, rows, ids, dense, mult, out, out_stride, lo, hi);
}

int64_t dlrm_interaction_hot(const int8_t *tables, const int8_t *hot, const int32_t *remap, const int64_t *offsets,
                             const int64_t *rows, const int32_t *ids, const uint8_t *dense, const float *mult,
                             uint8_t *out, int64_t out_stride, int64_t lo, int64_t hi) {
    return interaction(tables, hot, remap, offsets, rows, ids, dense, mult, out, out_stride, lo, hi);
}
