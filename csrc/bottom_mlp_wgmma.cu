// The bottom MLP (13 -> 512 -> 256 -> 128, ReLU each, int8 activations) as one persistent CUDA kernel on Hopper's
// warpgroup MMA, every activation kept in registers.
//
// Why CUDA: the Triton kernel (engines/cuda/bottom_mlp.py) streams layers 2 and 3's 160 KB of weights from L2 into
// every 64-row program and keeps ~2 warps per scheduler; it took 0.19 ms per 262,144 pairs on an H100, about as long
// as the whole gather + interaction (docs/architecture.md). Triton cannot keep weights resident in shared
// memory across a persistent loop, nor hand an accumulator to the next MMA as its register operand. Here:
//
// * one CTA per SM loads all three weight matrices (and the per-channel scales) into shared memory once, from an
//   image the host lays out (bottom_mlp.wgmma_image), and two warpgroups loop over 64-row tiles;
// * layer 1 runs on the fp16 tensor cores (as in the Triton kernel: int8 values and their products are exact in fp16,
//   every partial sum is an integer below 2^24, so the fp32 accumulator is the exact int32 result); layers 2 and 3
//   on the int8 ones; A comes from registers (wgmma's RS form), B from shared memory;
// * an accumulator fragment becomes the next layer's A fragment in place: lane (g = lane / 4, t = lane % 4) of warp w
//   holds rows 16w + g and 16w + g + 8 at columns 8j + 2t and 8j + 2t + 1 of every 8-column group j, and the int8 A
//   operand wants k = 4t..4t+3 and 16+4t..16+4t+3 of the same rows. Within each 32-column block the next layer's
//   weight columns are permuted to match (bottom_mlp.K_PERMUTATION), so the requantized bytes are
//   packed and used with no shuffle and no shared memory;
// * layer 1 is computed one 32-column block at a time, just before layer 2 consumes it, so the 512-wide hidden layer
//   is never held whole; the MMAs are asynchronous, so block s is requantized while layer 2 multiplies block s - 1
//   and layer 1 computes block s + 1, and the next tile's inputs load during this one.
//
// The arithmetic is the Triton kernel's: y = fma(acc, w_scale, bias), q = round_half_even(min(max(y * act_inv, 0),
// 127)), rounded and saturated by the packed conversion (to_int8x2). The same bytes.
//
// Shared memory, B operands "K-major, no swizzle": 8 x 16-byte core matrices stored as 128 contiguous bytes; within
// a 32-deep k block, core matrix (n / 8, k / 16) sits at (n / 8) * 256 + (k / 16) * 128 (descriptor: leading byte
// offset 128, stride byte offset 256).

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

constexpr int kTileRows = 64;      // rows per warpgroup tile
constexpr int kWarpgroups = 2;     // per CTA, each on its own tiles
constexpr int kThreads = 128 * kWarpgroups;

// The shared-memory image (bytes); bottom_mlp.wgmma_image builds it.
constexpr int kW1Bytes = 512 * 16 * 2;  // fp16 [512, 16] (13 used)
constexpr int kW2Bytes = 256 * 512;     // int8 [256, 512]
constexpr int kW3Bytes = 128 * 256;     // int8 [128, 256]
constexpr int kW1 = 0;
constexpr int kW2 = kW1 + kW1Bytes;
constexpr int kW3 = kW2 + kW2Bytes;
constexpr int kParams = kW3 + kW3Bytes;  // fp32: w_scale, bias, act_inv of layer 1 (512 each), 2 (256), 3 (128)
constexpr int kS1 = 0, kB1 = 512, kA1 = 1024, kS2 = 1536, kB2 = 1792, kA2 = 2048, kS3 = 2304, kB3 = 2432,
              kA3 = 2560;
constexpr int kImageBytes = kParams + 4 * 2688;
static_assert(kImageBytes % 16 == 0, "the image is copied in 16-byte pieces");

__device__ __forceinline__ uint64_t descriptor(uint32_t smem_address) {
  return uint64_t((smem_address & 0x3FFFF) >> 4) | (uint64_t(128 >> 4) << 16) | (uint64_t(256 >> 4) << 32);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {  // until at most Pending committed groups are still running
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}

// Keeps the compiler from moving accesses of registers an asynchronous MMA owns across its issue or its wait.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(int (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// Layer 1, one 32-column block: d[64 x 32] fp32 = a[64 x 16] fp16 (registers) @ B (shared); d overwritten.
__device__ __forceinline__ void mma_layer1(float (&d)[16], const unsigned (&a)[4], uint64_t b) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, "
      "%8, %9, %10, %11, %12, %13, %14, %15}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(0));  // scale-d 0: d = a @ B
}

// The accumulator operands of the asm statements below: their names in the template ("%0".."%127") and the
// registers bound to them (d[0..127]).
#define DLRM_REGS_0_63 \
  "%0, %1, %2, %3, %4, %5, %6, %7, " \
  "%8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, " \
  "%40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, " \
  "%56, %57, %58, %59, %60, %61, %62, %63"
#define DLRM_REGS_64_127 \
  "%64, %65, %66, %67, %68, %69, %70, %71, " \
  "%72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, " \
  "%88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, " \
  "%104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, " \
  "%120, %121, %122, %123, %124, %125, %126, %127"
#define DLRM_D4(i) "+r"(d[i]), "+r"(d[(i) + 1]), "+r"(d[(i) + 2]), "+r"(d[(i) + 3])
#define DLRM_D16(i) DLRM_D4(i), DLRM_D4((i) + 4), DLRM_D4((i) + 8), DLRM_D4((i) + 12)
#define DLRM_D64(i) DLRM_D16(i), DLRM_D16((i) + 16), DLRM_D16((i) + 32), DLRM_D16((i) + 48)

// Layer 2, one 32-deep k block: d[64 x 256] int32 (+)= a[64 x 32] int8 (registers) @ B (shared).
__device__ __forceinline__ void mma_layer2(int (&d)[128], const unsigned (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {" DLRM_REGS_0_63 ", " DLRM_REGS_64_127 "}, "
      "{%128, %129, %130, %131}, %132, p;\n}\n"
      : DLRM_D64(0), DLRM_D64(64)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

// Layer 3, one 32-deep k block: d[64 x 128] int32 (+)= a[64 x 32] int8 (registers) @ B (shared).
__device__ __forceinline__ void mma_layer3(int (&d)[64], const unsigned (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {" DLRM_REGS_0_63 "}, "
      "{%64, %65, %66, %67}, %68, p;\n}\n"
      : DLRM_D64(0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

#undef DLRM_D64
#undef DLRM_D16
#undef DLRM_D4
#undef DLRM_REGS_64_127
#undef DLRM_REGS_0_63

// The Triton kernel's requantization, round_half_even(min(max(fma(v, s, b) * a, 0), 127)), before its rounding.
__device__ __forceinline__ float requant_scale(float v, float s, float b, float a) { return fmaf(v, s, b) * a; }

// Two of those to int8, in bytes 0 and 1, with `above` in bytes 2 and 3: round half to even, ReLU and saturate.
// Rounding before the upper clamp gives the same integer (the bound is one). ptxas makes this one packed
// F2IP.S8.F32.RELU, where the Triton kernel spends two FMNMX, an FADD and a byte move per value.
__device__ __forceinline__ unsigned to_int8x2(float lo, float hi, unsigned above) {
  int a, b;
  unsigned r;
  asm("cvt.rni.s32.f32 %0, %1;" : "=r"(a) : "f"(fmaxf(lo, 0.0f)));
  asm("cvt.rni.s32.f32 %0, %1;" : "=r"(b) : "f"(fmaxf(hi, 0.0f)));
  asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(b), "r"(a), "r"(above));
  return r;
}

// The requantization parameters of one 32-column block for this lane: columns col0 + 8j + 2t (+1), j = 0..3.
struct BlockParams {
  float2 scale[4], bias[4], act_inv[4];
};

// Loaded from shared memory. They depend on the column only, so the callers load them before waiting for the
// accumulator they apply to (the waits are asm statements that clobber memory: loads cannot move above them).
__device__ __forceinline__ void load_params(const float* prm, int s, int b, int a, int col0, int t, BlockParams& p) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    int c = col0 + 8 * j + 2 * t;
    p.scale[j] = *reinterpret_cast<const float2*>(prm + s + c);
    p.bias[j] = *reinterpret_cast<const float2*>(prm + b + c);
    p.act_inv[j] = *reinterpret_cast<const float2*>(prm + a + c);
  }
}

// Four 8-column groups of an accumulator (16 values: group j at v[4j..4j+3] = (g, 2t), (g, 2t+1), (g+8, 2t),
// (g+8, 2t+1)) requantized with the block's parameters -> the int8 A fragment of one k block: a[0] row g, k
// 4t..4t+3 = groups 0, 1; a[1] row g + 8 likewise; a[2], a[3] the same from groups 2, 3.
template <class Value>
__device__ __forceinline__ void to_fragment(const Value* v, const BlockParams& p, unsigned (&frag)[4]) {
  float z[16];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    z[4 * j + 0] = requant_scale(float(v[4 * j + 0]), p.scale[j].x, p.bias[j].x, p.act_inv[j].x);
    z[4 * j + 1] = requant_scale(float(v[4 * j + 1]), p.scale[j].y, p.bias[j].y, p.act_inv[j].y);
    z[4 * j + 2] = requant_scale(float(v[4 * j + 2]), p.scale[j].x, p.bias[j].x, p.act_inv[j].x);
    z[4 * j + 3] = requant_scale(float(v[4 * j + 3]), p.scale[j].y, p.bias[j].y, p.act_inv[j].y);
  }
  frag[0] = to_int8x2(z[0], z[1], to_int8x2(z[4], z[5], 0));
  frag[1] = to_int8x2(z[2], z[3], to_int8x2(z[6], z[7], 0));
  frag[2] = to_int8x2(z[8], z[9], to_int8x2(z[12], z[13], 0));
  frag[3] = to_int8x2(z[10], z[11], to_int8x2(z[14], z[15], 0));
}

struct Args {
  const int8_t* x;      // [*, x_stride] int8, k_in columns used
  const int64_t* rows;  // [num_pairs] rows of x, or null (row p = pair p)
  long long x_stride;
  int k_in;
  int num_pairs;
  const uint8_t* image;  // kImageBytes
  int8_t* out;           // [num_pairs, out_stride], columns 0..127 written
  long long out_stride;
};

__device__ __forceinline__ unsigned half2_bits(const int8_t* row, int k, int k_in) {
  __half lo = __int2half_rn(row != nullptr && k < k_in ? int(row[k]) : 0);
  __half hi = __int2half_rn(row != nullptr && k + 1 < k_in ? int(row[k + 1]) : 0);
  return unsigned(__half_as_ushort(lo)) | (unsigned(__half_as_ushort(hi)) << 16);
}

// Layer 1's A operand (fp16, m64 k16) of a tile: rows g and g + 8 of the warp's 16 at k 2t, 2t+1 and 8+2t, 8+2t+1;
// zeros past the batch (and for a tile past the last).
__device__ __forceinline__ void load_inputs(const Args& args, int tile, int warp, int g, int t, unsigned (&a)[4]) {
  const int p0 = tile * kTileRows + warp * 16 + g, p1 = p0 + 8;
  const int8_t* x0 = nullptr;
  const int8_t* x1 = nullptr;
  if (p0 < args.num_pairs) x0 = args.x + (args.rows ? args.rows[p0] : p0) * args.x_stride;
  if (p1 < args.num_pairs) x1 = args.x + (args.rows ? args.rows[p1] : p1) * args.x_stride;
  a[0] = half2_bits(x0, 2 * t, args.k_in);
  a[1] = half2_bits(x1, 2 * t, args.k_in);
  a[2] = half2_bits(x0, 8 + 2 * t, args.k_in);
  a[3] = half2_bits(x1, 8 + 2 * t, args.k_in);
}

// Layers 1 and 2, k block by k block, software-pipelined two deep: while layer 2 multiplies block s - 1, layer 1
// has block s + 1 in flight and block s is requantized. Three layer-1 accumulators (s % 3) and two fragment buffers
// (s % 2); before touching them, wait until at most the two latest groups (layer 1 of block s + 1, layer 2 of block
// s - 1) are still running. Fully unrolled (s is a constant), so every buffer index is one.
__device__ __forceinline__ void layers_1_2_step(int s, float (&acc1)[3][16], unsigned (&a2)[2][4], int (&acc2)[128],
                                                const unsigned (&a1)[4], const float* prm, uint32_t base, int t) {
  BlockParams params;
  load_params(prm, kS1, kB1, kA1, 32 * s, t, params);
  if (s == 0)
    wgmma_wait<1>();  // layer 1 of blocks 0 and 1 issued: block 0's done
  else if (s == 15)
    wgmma_wait<1>();  // nothing issued for block 17: only layer 2 of block 14 may still run
  else
    wgmma_wait<2>();
  pin(acc1[s % 3]);
  to_fragment(acc1[s % 3], params, a2[s % 2]);
  wgmma_fence();
  if (s + 2 < 16) {
    mma_layer1(acc1[(s + 2) % 3], a1, descriptor(base + kW1 + (s + 2) * 1024));
    wgmma_commit();
  }
  mma_layer2(acc2, a2[s % 2], descriptor(base + kW2 + s * 8192), s);
  wgmma_commit();
}

__global__ void __launch_bounds__(kThreads, 1) bottom_mlp_kernel(Args args) {
  extern __shared__ __align__(128) uint8_t smem[];
  {
    const int4* src = reinterpret_cast<const int4*>(args.image);
    int4* dst = reinterpret_cast<int4*>(smem);
    for (int i = threadIdx.x; i < kImageBytes / 16; i += kThreads) dst[i] = src[i];
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // visible to the MMAs' reads
    __syncthreads();
  }
  const float* prm = reinterpret_cast<const float*>(smem + kParams);
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int group = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int tiles = (args.num_pairs + kTileRows - 1) / kTileRows;
  const int stride = gridDim.x * kWarpgroups;

  int tile = blockIdx.x * kWarpgroups + group;
  unsigned a1[4];
  load_inputs(args, tile, warp, g, t, a1);
  for (; tile < tiles; tile += stride) {
    unsigned a1_next[4];  // the next tile's inputs load while this one computes
    load_inputs(args, tile + stride, warp, g, t, a1_next);

    int acc2[128] = {};
    float acc1[3][16] = {};
    unsigned a2[2][4];
    wgmma_fence();
    mma_layer1(acc1[0], a1, descriptor(base + kW1));
    wgmma_commit();
    mma_layer1(acc1[1], a1, descriptor(base + kW1 + 1024));
    wgmma_commit();
#pragma unroll
    for (int s = 0; s < 16; ++s) layers_1_2_step(s, acc1, a2, acc2, a1, prm, base, t);
    wgmma_wait<0>();
    pin(acc2);

    // layer 3: block s's fragment is requantized while block s - 1 multiplies (two fragment buffers)
    int acc3[64] = {};
    unsigned a3[2][4];
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      BlockParams params;
      load_params(prm, kS2, kB2, kA2, 32 * s, t, params);
      if (s >= 2) wgmma_wait<1>();
      to_fragment(acc2 + 16 * s, params, a3[s % 2]);
      wgmma_fence();
      mma_layer3(acc3, a3[s % 2], descriptor(base + kW3 + s * 4096), s);
      wgmma_commit();
    }
    wgmma_wait<0>();
    pin(acc3);

    // layer 3 -> int8, columns 8j + 2t, +1 of rows p0 and p1: one 16-bit store each
    const int p0 = tile * kTileRows + warp * 16 + g, p1 = p0 + 8;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      int c = 8 * j + 2 * t;
      float2 sc = *reinterpret_cast<const float2*>(prm + kS3 + c);
      float2 bi = *reinterpret_cast<const float2*>(prm + kB3 + c);
      float2 ai = *reinterpret_cast<const float2*>(prm + kA3 + c);
      unsigned r0 = to_int8x2(requant_scale(float(acc3[4 * j + 0]), sc.x, bi.x, ai.x),
                              requant_scale(float(acc3[4 * j + 1]), sc.y, bi.y, ai.y), 0);
      unsigned r1 = to_int8x2(requant_scale(float(acc3[4 * j + 2]), sc.x, bi.x, ai.x),
                              requant_scale(float(acc3[4 * j + 3]), sc.y, bi.y, ai.y), 0);
      if (p0 < args.num_pairs)
        *reinterpret_cast<uint16_t*>(args.out + p0 * args.out_stride + c) = static_cast<uint16_t>(r0);
      if (p1 < args.num_pairs)
        *reinterpret_cast<uint16_t*>(args.out + p1 * args.out_stride + c) = static_cast<uint16_t>(r1);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) a1[i] = a1_next[i];
  }
}

}  // namespace

extern "C" {

int dlrm_bottom_mlp_image_bytes() { return kImageBytes; }

// Returns 0 on success; 1 arguments not supported (alignment, sizes); 4 launch failed; 6 cannot select `device`.
int dlrm_bottom_mlp_run(const void* x, const void* rows, long long x_stride, int k_in, int num_pairs,
                        const void* image, void* out, long long out_stride, int sm_count, int device, void* stream) {
  if (cudaSetDevice(device) != cudaSuccess) return 6;
  if (num_pairs < 1) return 0;
  if (k_in < 1 || k_in > 16 || out_stride % 2 || reinterpret_cast<uintptr_t>(out) % 2 ||
      reinterpret_cast<uintptr_t>(image) % 16 || sm_count < 1)
    return 1;
  if (cudaFuncSetAttribute(bottom_mlp_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kImageBytes) !=
      cudaSuccess)
    return 4;
  Args a{static_cast<const int8_t*>(x), static_cast<const int64_t*>(rows), x_stride, k_in, num_pairs,
         static_cast<const uint8_t*>(image), static_cast<int8_t*>(out), out_stride};
  int tiles = (num_pairs + kTileRows - 1) / kTileRows;
  int blocks = (tiles + kWarpgroups - 1) / kWarpgroups;
  if (blocks > sm_count) blocks = sm_count;
  bottom_mlp_kernel<<<blocks, kThreads, kImageBytes, static_cast<cudaStream_t>(stream)>>>(a);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

}  // extern "C"
