// The embedding gather fused with the dot interaction, in CUDA: one warp per pair, the int8 MMA fragments loaded
// straight from the table rows (engines/cuda/interaction.py's "paired" column layout, the same bytes as its
// Triton kernel).
//
// Why CUDA: the Triton kernel stages every gathered row through shared memory (a layout conversion for each MMA
// operand, with barriers) and requantizes the whole 32 x 32 Gram matrix. With the rows in cache it still takes
// 0.37 ms for 262,144 pairs on an H100 (docs/architecture.md): instruction- and latency-bound. Triton
// cannot load an MMA fragment from global memory itself. Here each lane loads 32 contiguous bytes of each of its
// four rows (two 16-byte loads), and those registers are both MMA operands:
//
// * mma.sync m16n8k32 (s8): lane (g = lane / 4, t = lane % 4) holds, for k-step s, A's rows g and g + 8 at k
//   4t..4t+3 and 16+4t..+3, and B's column g at the same k. The Gram matrix sums over k in any order, so k-step s,
//   half h, byte b of lane t may stand for byte 32t + 8s + 4h + b of the row, in A and B alike: a lane's 32 bytes
//   of rows g, g + 8, g + 16, g + 24 (slots; slot 0 = the dense vector, 1..26 = tables, 27..31 = zero) are all the
//   operands it ever needs.
// * only the six 16 x 8 tiles that hold an entry (i, j), j <= i < 27, are computed (of eight): 24 MMAs per pair.
// * the accumulator's lane holds columns 2t, 2t + 1 of a row, adjacent bytes in the paired layout (every row of
//   entries starts at an even column), so each pair of entries is one packed conversion and one 16-bit store.
//
// Requantization as the Triton kernel's: q = round_half_even(clamp(float(dot) * mult[i][j], -127, 127)).

#include <cstdint>
#include <cuda_runtime.h>

namespace {

constexpr int kTables = 26;
constexpr int kDim = 128;
constexpr int kWarpsPerBlock = 4;
constexpr int kTiles = 6;
// The 16 x 8 tiles (m, q) of the 32 x 32 Gram matrix that hold entries j <= i <= 26 (rows 16m.., columns 8q..):
// (0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3).
__device__ __forceinline__ constexpr int tile_m(int tile) { return tile < 2 ? 0 : 1; }
__device__ __forceinline__ constexpr int tile_q(int tile) { return tile < 2 ? tile : tile - 2; }

struct Fragments {
  uint4 lo[4], hi[4];  // per slot k (row g + 8k): bytes 32t..32t+15 and 32t+16..32t+31
};

__device__ __forceinline__ unsigned word(const Fragments& f, int k, int j) {
  const uint4& v = j < 4 ? f.lo[k] : f.hi[k];
  switch (j & 3) {
    case 0: return v.x;
    case 1: return v.y;
    case 2: return v.z;
    default: return v.w;
  }
}

__device__ __forceinline__ void mma_s8(int (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                       unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A 16-bit store where column >= 0, predicated rather than branched around.
__device__ __forceinline__ void store_u16_if(int8_t* row, int column, unsigned value) {
  asm volatile("{\n .reg .pred p;\n setp.ge.s32 p, %2, 0;\n @p st.global.u16 [%0], %1;\n}\n"
               :: "l"(row + column), "h"(static_cast<unsigned short>(value)), "r"(column) : "memory");
}

__device__ __forceinline__ uint4 load_nc(const int8_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// Column of the paired layout where row i's entries start (i >= 1): 128 + 2 F(i), F(i) = sum_{k<i} ceil(k / 2).
__device__ __forceinline__ int row_start(int i) {
  int half = (i - 1) / 2;
  return 128 + 2 * ((i - 1) % 2 == 0 ? half * (half + 1) : (half + 1) * (half + 1));
}

// round_half_even(clamp(float(dot) * mult, -127, 127)) of two entries as int8, in bytes 0 and 1 (the Triton
// kernel's requantization). float(dot) without I2FP: |dot| <= 128 * 127 * 127 < 2^22, so 0x4B400000 + dot is the
// float 1.5 * 2^23 + dot exactly. Rounding before the upper clamp gives the same integer (the bound is one), so after
// the lower clamp it is cvt.rni.s32 + cvt.pack.sat.s8, which ptxas makes one packed F2IP per two entries (instead
// of two FMNMX, an FADD and a byte move per entry).
__device__ __forceinline__ unsigned requant_pair(int dot_lo, float mult_lo, int dot_hi, float mult_hi) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23, bits 0x4B400000
  float lo = fmaxf((__int_as_float(0x4B400000 + dot_lo) - kMagic) * mult_lo, -127.0f);
  float hi = fmaxf((__int_as_float(0x4B400000 + dot_hi) - kMagic) * mult_hi, -127.0f);
  int a, b;
  unsigned r;
  asm("cvt.rni.s32.f32 %0, %1;" : "=r"(a) : "f"(lo));
  asm("cvt.rni.s32.f32 %0, %1;" : "=r"(b) : "f"(hi));
  asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, 0;" : "=r"(r) : "r"(b), "r"(a));
  return r;
}

struct Args {
  const int* cat;          // int32 [*, cat_stride] ids
  const int64_t* rows;     // int64 [num_pairs] rows of cat (and of top) per pair, or null: pair p is row p
  int64_t cat_stride;
  int num_pairs;
  const int8_t* tables;    // int8 [R, 128]
  const int64_t* offsets;  // int64 [26] first row of each table
  const float* mult;       // fp32 [32, 32] s_i * s_j / column scale
  int8_t* top;             // int8 [num_pairs, top_stride]: dense vector in columns 0..127, entries written after
  int64_t top_stride;
  int pairs_per_warp;
};

// The ids of pair p's four slots of this lane (slot k = row g + 8k; -1 where the slot is not a table).
__device__ __forceinline__ void load_ids(const Args& a, int64_t cat_row, int g, int (&ids)[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    int slot = g + 8 * k;
    ids[k] = (slot >= 1 && slot <= kTables) ? a.cat[cat_row * a.cat_stride + (slot - 1)] : 0;
  }
}

__device__ __forceinline__ void load_rows(const Args& a, int64_t pair, const int (&ids)[4],
                                          const int64_t (&first)[4], int g, int t, Fragments& f) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    int slot = g + 8 * k;
    if (slot == 0) {  // the bottom MLP's output, written by the previous kernel
      const uint4* src = reinterpret_cast<const uint4*>(a.top + pair * a.top_stride + 32 * t);
      f.lo[k] = src[0];
      f.hi[k] = src[1];
    } else if (slot <= kTables) {
      const int8_t* src = a.tables + (first[k] + ids[k]) * kDim + 32 * t;
      f.lo[k] = load_nc(src);
      f.hi[k] = load_nc(src + 16);
    } else {
      f.lo[k] = make_uint4(0, 0, 0, 0);
      f.hi[k] = make_uint4(0, 0, 0, 0);
    }
  }
}

__global__ void __launch_bounds__(32 * kWarpsPerBlock) interaction_kernel(Args a) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t warp = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int64_t p0 = warp * a.pairs_per_warp;
  if (p0 >= a.num_pairs) return;
  const int count = int(min(int64_t(a.pairs_per_warp), a.num_pairs - p0));

  // Per lane, once: the tables' first rows of its slots, and per tile and row half the output column of its two
  // entries (-1: not written) and their multipliers.
  int64_t first[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    int slot = g + 8 * k;
    first[k] = (slot >= 1 && slot <= kTables) ? a.offsets[slot - 1] : 0;
  }
  int column[kTiles][2];
  float mult[kTiles][2][2];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      int i = 16 * tile_m(tile) + g + 8 * half;
      int j = 8 * tile_q(tile) + 2 * t;
      bool written = i >= 1 && i <= kTables && j < (i + 1) / 2 * 2;
      column[tile][half] = written ? row_start(i) + j : -1;
      mult[tile][half][0] = a.mult[i * 32 + j];
      mult[tile][half][1] = a.mult[i * 32 + j + 1];
    }
  }

  auto row_of = [&](int64_t p) { return a.rows ? a.rows[p] : p; };
  int ids[4];
  Fragments cur, next;
  load_ids(a, row_of(p0), g, ids);
  load_rows(a, p0, ids, first, g, t, cur);
  if (count > 1) load_ids(a, row_of(p0 + 1), g, ids);

  int8_t* out = a.top + p0 * a.top_stride;  // pair p's row, moved on by one row per pair
  // Pair n from `now`, with pair n + 1's rows loading into `later` meanwhile. (Two copies of the step with the
  // buffers swapped copy no registers but need 187 of them, against 150: fewer warps per SM, more instructions.)
  auto step = [&](int n, const Fragments& now, Fragments& later) {
    const int64_t p = p0 + n;
    if (n + 1 < count) load_rows(a, p + 1, ids, first, g, t, later);
    if (n + 2 < count) load_ids(a, row_of(p + 2), g, ids);
    int acc[kTiles][4];
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
      acc[tile][0] = acc[tile][1] = acc[tile][2] = acc[tile][3] = 0;
      const int m = tile_m(tile), q = tile_q(tile);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        mma_s8(acc[tile], word(now, 2 * m, 2 * s), word(now, 2 * m + 1, 2 * s), word(now, 2 * m, 2 * s + 1),
               word(now, 2 * m + 1, 2 * s + 1), word(now, q, 2 * s), word(now, q, 2 * s + 1));
      }
    }
#pragma unroll
    for (int tile = 0; tile < kTiles; ++tile) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        unsigned two = requant_pair(acc[tile][2 * half], mult[tile][half][0], acc[tile][2 * half + 1],
                                    mult[tile][half][1]);
        store_u16_if(out, column[tile][half], two);
      }
    }
    out += a.top_stride;
  };
#pragma unroll 1
  for (int n = 0; n < count; ++n) {
    step(n, cur, next);
    cur = next;
  }
}

}  // namespace

extern "C" {

// Returns 0 on success; 1 arguments not supported (alignment, sizes); 4 launch failed; 6 cannot select `device`.
int dlrm_interaction_run(const void* cat, const void* rows, long long cat_stride, int num_pairs, const void* tables,
                         const void* offsets, const float* mult, void* top, long long top_stride,
                         int pairs_per_warp, int device, void* stream) {
  if (cudaSetDevice(device) != cudaSuccess) return 6;
  if (num_pairs < 1 || pairs_per_warp < 1 || top_stride % 16 || reinterpret_cast<uintptr_t>(top) % 16 ||
      reinterpret_cast<uintptr_t>(tables) % 16 || top_stride < 512)
    return 1;
  Args a{static_cast<const int*>(cat), static_cast<const int64_t*>(rows), cat_stride, num_pairs,
         static_cast<const int8_t*>(tables), static_cast<const int64_t*>(offsets), mult,
         static_cast<int8_t*>(top), top_stride, pairs_per_warp};
  int64_t warps = (int64_t(num_pairs) + pairs_per_warp - 1) / pairs_per_warp;
  int blocks = int((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  interaction_kernel<<<blocks, 32 * kWarpsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

}  // extern "C"
