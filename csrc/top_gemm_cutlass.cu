// Top-MLP hidden layers as CUTLASS 3 (sm_90a) int8 GEMMs: warp-specialized, persistent, thread-block clusters
// with TMA multicast -- what Triton 3.6 cannot express ("NYI: Support multicast").
//
//   D int8 [M, N] = saturate_int8(round_half_even(relu(acc * alpha[n] + bias[n]))),  acc = A @ B^T in int32,
//   A int8 [M, K] (row stride lda), B int8 [N, K] (row stride ldb, K-major), alpha / bias fp32 [N].
//
// With alpha = w_scale * act_inv and bias = b * act_inv this is the "folded" epilogue of top_mlp.py. Two ways to
// compute it (the Fusion parameter): CUTLASS's PerColLinCombPerColBiasEltAct, which evaluates alpha * acc +
// (beta * C + bias) with beta = 0 and no C (two FFMA per element in the sm_90 SASS), or an epilogue tree of one
// multiply-add, relu(fma(acc, alpha, bias)) (one FFMA; the same value, as beta * 0 + bias is bias exactly).
// A C ABI (no PyTorch headers): Python loads the library with ctypes and passes device pointers and the stream.
#include <cstdint>
#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass_launch.h"
#include "permuted_store_epilogue.h"
#include "whole_row_broadcast.h"

using namespace cute;

namespace {

namespace fusion = cutlass::epilogue::fusion;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// CUTLASS's fusion operation: alpha[n] * acc + (beta * C + bias[n]), ReLU, int8 (beta = 0, no C).
template <class TileShape>
struct LinCombFusion {
  using Callbacks = fusion::PerColLinCombPerColBiasEltAct<cutlass::epilogue::thread::ReLu, int8_t, float, float,
                                                          int8_t, float>;
  template <class ThreadArgs>
  static void set(ThreadArgs& thread, const float* alpha, const float* bias) {
    thread.alpha_ptr = alpha;
    thread.bias_ptr = bias;
    thread.beta = 0.0f;
  }
};

// An epilogue tree: relu(fma(acc, alpha[n], bias[n])) -> int8, one multiply-add per element, alpha and bias from
// a per-column leaf.
template <class PerColumn>
struct FmaTree {
  using Callbacks = fusion::Sm90EVT<
      fusion::Sm90Compute<cutlass::epilogue::thread::ReLu, int8_t, float, kRound>,
      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::homogeneous_multiply_add, float, float, kRound>,
                      PerColumn, fusion::Sm90AccFetch, PerColumn>>;
  template <class ThreadArgs>
  static void set(ThreadArgs& thread, const float* alpha, const float* bias) {
    auto column = dlrm_cutlass::per_column_arguments<PerColumn>;
    thread = {{column(alpha), {}, column(bias), {}}, {}};  // relu(multiply_add(alpha[n], acc, bias[n]))
  }
};

// alpha and bias from CUTLASS's row broadcast (the tile's slice fetched from global memory at each tile).
template <class TileShape>
using FmaFusion = FmaTree<fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>>;

// alpha and bias held whole in shared memory (csrc/whole_row_broadcast.h: each consumer warpgroup copies them once;
// no global load or barrier per tile). N <= 1024.
template <class TileShape>
using FmaSmemFusion = FmaTree<dlrm_cutlass::Sm90WholeRowBroadcast<1024, TileShape>>;

// No epilogue tree: csrc/permuted_store_epilogue.h stores each thread's results from registers, 16 bytes at a time,
// in its own column order within each 128-column tile (alpha and bias given in that order too).
template <class TileShape>
struct PermutedStoreFusion {
  template <class ThreadArgs>
  static void set(ThreadArgs& thread, const float* alpha, const float* bias) {
    thread.alpha = alpha;
    thread.bias = bias;
  }
};

// The collective epilogue of a layer: CUTLASS's TMA-store epilogue with the Fusion's tree, or for
// PermutedStoreFusion the register-to-global one (wrapped for the warp-specialized kernels).
template <class TileShape, class ClusterShape, class EpilogueTile, class EpilogueSchedule, class LayoutD, int kAlign,
          template <class> class Fusion>
struct EpilogueFor {
  using Op = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape, EpilogueTile, int32_t, float,
      void, LayoutD, kAlign, int8_t, LayoutD, kAlign, EpilogueSchedule,
      typename Fusion<TileShape>::Callbacks>::CollectiveOp;
};

template <class TileShape, class ClusterShape, class EpilogueTile, class EpilogueSchedule, class LayoutD, int kAlign>
struct EpilogueFor<TileShape, ClusterShape, EpilogueTile, EpilogueSchedule, LayoutD, kAlign, PermutedStoreFusion> {
  using Op = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<
      dlrm_cutlass::PermutedInt8Epilogue<cutlass::detail::TagToStrideC_t<LayoutD>>>;
};

// EpilogueTile: the subtile the epilogue converts, stages in shared memory and stores by TMA at a time (Auto: 64 x
// 64 for these int8 pingpong tiles, i.e. four per 128 x 128 tile, two staging buffers; a pingpong subtile is 64
// rows).
template <class TileShape, class ClusterShape, class KernelSchedule, class EpilogueSchedule,
          template <class> class Fusion = LinCombFusion,
          class EpilogueTile = cutlass::epilogue::collective::EpilogueTileAuto>
struct Int8Layer {
  using LayoutA = cutlass::layout::RowMajor;     // A [M, K]
  using LayoutB = cutlass::layout::ColumnMajor;  // B^T [K, N] column-major == weight [N, K] row-major
  using LayoutD = cutlass::layout::RowMajor;     // D [M, N]
  static constexpr int kAlign = 16;              // 16 int8 = one 128-bit access

  using Epilogue =
      typename EpilogueFor<TileShape, ClusterShape, EpilogueTile, EpilogueSchedule, LayoutD, kAlign, Fusion>::Op;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, LayoutA, kAlign, int8_t, LayoutB, kAlign,
      int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const int8_t* a, const int8_t* b, int8_t* d, const float* alpha,
                                            const float* bias, int m, int n, int k, int lda, int ldb, int ldd,
                                            int sm_count, int device) {
    auto args = dlrm_cutlass::int8_gemm_arguments<Gemm>(a, b, d, m, n, k, lda, ldb, ldd, sm_count, device);
    Fusion<TileShape>::set(args.epilogue.thread, alpha, bias);
    return args;
  }

  // 0 on success, else a code (csrc/cutlass_launch.h).
  static int run(const int8_t* a, const int8_t* b, int8_t* d, const float* alpha, const float* bias, int m, int n,
                 int k, int lda, int ldb, int ldd, int sm_count, int device, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream) {
    return dlrm_cutlass::launch<Gemm>(arguments(a, b, d, alpha, bias, m, n, k, lda, ldb, ldd, sm_count, device),
                                      device, workspace, workspace_bytes, stream);
  }

  static size_t workspace(int m, int n, int k, int sm_count) {
    return Gemm::get_workspace_size(arguments(nullptr, nullptr, nullptr, nullptr, nullptr, m, n, k, k, k, n,
                                              sm_count, 0));
  }
};

using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using EpiPingpong = cutlass::epilogue::TmaWarpSpecialized;
using Tile = Shape<_128, _128, _128>;
using Cluster = Shape<_1, _2, _1>;  // two CTAs of neighbouring N tiles share each A tile by TMA multicast
using WideTile = Shape<_64, _256, _128>;  // one m64n256 wgmma per K step: 10 instead of 12 KB of shared memory read
using ClusterM = Shape<_2, _1, _1>;       // two CTAs of neighbouring M tiles share each B tile by TMA multicast
using DeepTile = Shape<_128, _128, _256>;  // twice the K per pipeline stage: half the barriers, three stages

// The variants, by index (keep in step with settings.GEMM_VARIANTS in Python). 0 and 1 are the ones the configs
// use; 2 and 3, their baselines for benchmarks, and 4-7, other tile shapes, are built with -DDLRM_ALL_GEMM_VARIANTS
// (make kernels GEMM_VARIANTS=all).
using V0 = Int8Layer<Tile, Cluster, Pingpong, EpiPingpong, FmaSmemFusion, Shape<_64, _128>>;  // _fma_smemrows_e64x128
using V1 = Int8Layer<Tile, Cluster, Pingpong, EpiPingpong, PermutedStoreFusion>;             // _fma_permuted
#ifdef DLRM_ALL_GEMM_VARIANTS
using V2 = Int8Layer<Tile, Cluster, Pingpong, EpiPingpong, FmaFusion>;                       // _fma
using V3 = Int8Layer<Tile, Cluster, Pingpong, EpiPingpong>;                                  // CUTLASS's epilogue
using V4 = Int8Layer<WideTile, ClusterM, Pingpong, EpiPingpong, FmaSmemFusion, Shape<_64, _128>>;
using V5 = Int8Layer<WideTile, Cluster, Pingpong, EpiPingpong, FmaSmemFusion, Shape<_64, _128>>;
using V6 = Int8Layer<DeepTile, Cluster, Pingpong, EpiPingpong, FmaSmemFusion, Shape<_64, _128>>;
using V7 = Int8Layer<WideTile, ClusterM, Pingpong, EpiPingpong, FmaSmemFusion, Shape<_64, _256>>;
#endif

}  // namespace

extern "C" {

// 1 when `variant` is built into this library.
int dlrm_top_gemm_has_variant(int variant) {
#ifdef DLRM_ALL_GEMM_VARIANTS
  return variant >= 0 && variant < 8;
#else
  return variant >= 0 && variant < 2;
#endif
}

// Returns 0 on success, -1 for a variant not built into this library, else a code of csrc/cutlass_launch.h.
int dlrm_top_gemm_run(int variant, const void* a, const void* b, void* d, const float* alpha, const float* bias,
                      int m, int n, int k, int lda, int ldb, int ldd, int sm_count, int device, void* workspace,
                      size_t workspace_bytes, void* stream) {
  auto A = static_cast<const int8_t*>(a);
  auto B = static_cast<const int8_t*>(b);
  auto D = static_cast<int8_t*>(d);
  auto s = static_cast<cudaStream_t>(stream);
#define DLRM_RUN(V) \
  V::run(A, B, D, alpha, bias, m, n, k, lda, ldb, ldd, sm_count, device, workspace, workspace_bytes, s)
  switch (variant) {
    case 0: return DLRM_RUN(V0);
    case 1: return DLRM_RUN(V1);
#ifdef DLRM_ALL_GEMM_VARIANTS
    case 2: return DLRM_RUN(V2);
    case 3: return DLRM_RUN(V3);
    case 4: return DLRM_RUN(V4);
    case 5: return DLRM_RUN(V5);
    case 6: return DLRM_RUN(V6);
    case 7: return DLRM_RUN(V7);
#endif
    default: return -1;
  }
#undef DLRM_RUN
}

size_t dlrm_top_gemm_workspace(int variant, int m, int n, int k, int sm_count) {
  switch (variant) {
    case 0: return V0::workspace(m, n, k, sm_count);
    case 1: return V1::workspace(m, n, k, sm_count);
#ifdef DLRM_ALL_GEMM_VARIANTS
    case 2: return V2::workspace(m, n, k, sm_count);
    case 3: return V3::workspace(m, n, k, sm_count);
    case 4: return V4::workspace(m, n, k, sm_count);
    case 5: return V5::workspace(m, n, k, sm_count);
    case 6: return V6::workspace(m, n, k, sm_count);
    case 7: return V7::workspace(m, n, k, sm_count);
#endif
    default: return 0;
  }
}

}  // extern "C"
