// The top MLP's last two layers (512 -> 256 -> 1) as one CUTLASS 3 (sm_90a) int8 GEMM whose epilogue finishes the
// model: per row, z[m] = sum_n relu(acc[m, n] * w_scale[n] + bias[n]) * final_w[n], acc = A @ B^T in int32,
// A int8 [M, 512] (row stride lda), B int8 [256, 512]. Nothing M x N is stored: the 128 x 128 tiles' row sums meet
// in z by atomic adds onto zeros (two tiles per row: the sum is the same in either order). The bias and sigmoid
// of the last layer are left to the caller (one elementwise kernel over z).
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
#include "whole_row_broadcast.h"

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

namespace {

using FinalTile = Shape<_128, _128, _128>;
using Cluster = Shape<_1, _2, _1>;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// The per-column vectors (w_scale, bias, final_w): dlrm_cutlass::Sm90WholeRowBroadcast holds them whole in shared
// memory, copied once per consumer warpgroup (N <= 256; csrc/whole_row_broadcast.h); CUTLASS's row broadcast
// fetches each tile's slice from global memory at every tile (the baseline variant).
using TileSlices = fusion::Sm90RowBroadcast<0, FinalTile, float, float, Stride<_0, _1, int64_t>>;
using WholeRows = dlrm_cutlass::Sm90WholeRowBroadcast<256, FinalTile>;

// z[m] += sum_n relu(acc * w_scale[n] + bias[n]) * final_w[n]
template <class PerColumn>
using FinalEVT = fusion::Sm90EVT<
    fusion::Sm90ColReduction<cutlass::plus, cutlass::plus, cutlass::atomic_add, 0, FinalTile, float, float, kRound>,
    fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
                    fusion::Sm90EVT<fusion::Sm90Compute<cutlass::epilogue::thread::ReLu, float, float, kRound>,
                                    fusion::Sm90EVT<fusion::Sm90Compute<cutlass::homogeneous_multiply_add, float,
                                                                        float, kRound>,
                                                    PerColumn, fusion::Sm90AccFetch, PerColumn>>,
                    PerColumn>>;

// With no D to store, the epilogue builder sizes its (unused) staging from the tree's auxiliary element type;
// a bare tree has none, so name one.
template <class PerColumn>
struct FinalCallbacks : FinalEVT<PerColumn> {
  using FinalEVT<PerColumn>::FinalEVT;
  using ElementAux = float;
};

// EpilogueTile: the subtile the epilogue walks at a time (Auto: 64 x 32, eight per tile, each with two barriers
// even though nothing is staged for a store).
template <class PerColumn, class EpilogueTile = cutlass::epilogue::collective::EpilogueTileAuto>
struct FinalLayer {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, FinalTile, Cluster, EpilogueTile, int32_t, float,
      void, cutlass::layout::RowMajor, 16, void, cutlass::layout::RowMajor, 16,
      cutlass::epilogue::TmaWarpSpecialized, FinalCallbacks<PerColumn>>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, int8_t,
      cutlass::layout::ColumnMajor, 16, int32_t, FinalTile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const int8_t* a, const int8_t* b, float* z, const float* w_scale,
                                            const float* bias, const float* final_w, int m, int n, int k, int lda,
                                            int ldb, int sm_count, int device) {
    auto args = dlrm_cutlass::int8_gemm_arguments<Gemm>(a, b, nullptr, m, n, k, lda, ldb, n, sm_count, device);
    auto column = dlrm_cutlass::per_column_arguments<PerColumn>;
    // the tree's arguments, outermost node first: {children..., node}
    args.epilogue.thread = {
        {                                                  // multiplies
            {                                              // relu
                {column(w_scale), {}, column(bias), {}},   // multiply_add(w_scale[n], acc, bias[n])
                {}},
            column(final_w),                               // final_w[n]
            {}},
        {z, 0.0f, {}}};                                    // z[m] (col reduction)
    return args;
  }

  static int run(const int8_t* a, const int8_t* b, float* z, const float* w_scale, const float* bias,
                 const float* final_w, int m, int n, int k, int lda, int ldb, int sm_count, int device,
                 void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    return dlrm_cutlass::launch<Gemm>(
        arguments(a, b, z, w_scale, bias, final_w, m, n, k, lda, ldb, sm_count, device), device, workspace,
        workspace_bytes, stream);
  }

  static size_t workspace(int m, int n, int k, int sm_count) {
    return Gemm::get_workspace_size(arguments(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, m, n, k, k, k,
                                              sm_count, 0));
  }
};

}  // namespace

extern "C" {

// z fp32 [m]: initialize() zeroes it on `stream` (the atomic row reduction's fill), then the GEMM adds into it.
// variant: 0 the per-column vectors held whole in shared memory with 64 x 128 epilogue subtiles (the configs'),
// 1 fetched per tile by CUTLASS's row broadcast (built with -DDLRM_ALL_GEMM_VARIANTS). Returns 0, -1 for a variant
// not built into this library, or a code of csrc/cutlass_launch.h.
int dlrm_final_layer_run(int variant, const void* a, const void* b, float* z, const float* w_scale,
                         const float* bias, const float* final_w, int m, int n, int k, int lda, int ldb,
                         int sm_count, int device, void* workspace, size_t workspace_bytes, void* stream) {
  auto A = static_cast<const int8_t*>(a);
  auto B = static_cast<const int8_t*>(b);
  auto s = static_cast<cudaStream_t>(stream);
  switch (variant) {
    case 0: return FinalLayer<WholeRows, Shape<_64, _128>>::run(A, B, z, w_scale, bias, final_w, m, n, k, lda, ldb,
                                                                sm_count, device, workspace, workspace_bytes, s);
#ifdef DLRM_ALL_GEMM_VARIANTS
    case 1: return FinalLayer<TileSlices>::run(A, B, z, w_scale, bias, final_w, m, n, k, lda, ldb, sm_count,
                                               device, workspace, workspace_bytes, s);
#endif
    default: return -1;
  }
}

size_t dlrm_final_layer_workspace(int variant, int m, int n, int k, int sm_count) {
  switch (variant) {
    case 0: return FinalLayer<WholeRows, Shape<_64, _128>>::workspace(m, n, k, sm_count);
#ifdef DLRM_ALL_GEMM_VARIANTS
    case 1: return FinalLayer<TileSlices>::workspace(m, n, k, sm_count);
#endif
    default: return 0;
  }
}

}  // extern "C"
