// A CUTLASS sm90 epilogue that writes each thread's int8 results straight from registers to global memory, 16
// bytes at a time, in a column order of its own within each 128-column tile: no shared-memory staging, no TMA
// store, no barriers.
//
// Why: the top MLP's layer 0 (K = 512) is bound by its epilogue (docs/architecture.md: the pingpong
// kernel's two epilogues take ~94% of layer 0's time, a third of that in the synchronization of the TMA store's
// staged subtiles). A wgmma accumulator gives a thread two neighbouring columns in each group of eight, so in the
// natural column order a thread can only store 2 bytes at a time. The order here makes a thread's 16 values of one
// row and one half of the tile neighbours in memory.
//
// The order (one 128-column tile; every tile alike): the value of logical column
//     c = 8 j + 2 q + k        (j = 8 h + j' the column group, q the lane's quarter, k in {0, 1})
// is stored at physical column
//     p = 64 h + 16 q + 2 j' + k.
// The GEMM itself is the plain one, D[:, c] = requant(relu(acc * alpha[c] + bias[c])). Only where it lands moves,
// so the next layer's weight takes its K columns in the same order (cutlass_gemm.physical_column_order in Python).
// alpha and bias are passed in the physical order too, so a thread reads its 16 of each with four 16-byte loads.
//
// Values: acc -> float (round to nearest), fma(alpha, acc, bias), relu, round half to even, saturate to int8: the
// same functors as the FmaTree epilogue of top_gemm_cutlass.cu, so the same bytes, permuted.
//
// For the pingpong kernels with 128 x 128 tiles (one warpgroup per tile, wgmma 64 x 128 atoms twice along M).
// Rows at or past M are not written; N must be a multiple of 128.
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/array.h"
#include "cutlass/cutlass.h"
#include "cutlass_launch.h"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/numeric_conversion.h"

namespace dlrm_cutlass {

template <class StrideD_>
class PermutedInt8Epilogue : public NoWorkspace {
 public:
  using ElementC = int8_t;
  using StrideC = StrideD_;
  using ElementD = int8_t;
  using StrideD = StrideD_;
  using ElementOutput = int8_t;
  using ElementAccumulator = int32_t;
  using ElementCompute = float;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;

  static constexpr int kTileM = 128;
  static constexpr int kTileN = 128;

  struct SharedStorage {};
  using TensorStorage = SharedStorage;

  struct ThreadArguments {
    float const* alpha = nullptr;  // [N], physical column order
    float const* bias = nullptr;   // [N], physical column order
  };
  using ThreadEpilogueOp = ThreadArguments;  // the name CUTLASS's device adapter looks up

  struct Arguments {
    ThreadArguments thread{};
    ElementC const* ptr_C = nullptr;  // unused (no source)
    StrideC dC{};
    ElementD* ptr_D = nullptr;
    StrideD dD{};
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }

  // N a whole number of tiles; D's rows and alpha / bias 16-byte aligned.
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& problem_shape, Arguments const& args) {
    auto aligned = [](void const* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    int64_t ldd = cute::get<0>(args.dD);
    return int(cute::get<1>(problem_shape)) % kTileN == 0 && ldd % 16 == 0 && aligned(args.ptr_D) &&
           aligned(args.thread.alpha) && aligned(args.thread.bias);
  }

  CUTLASS_HOST_DEVICE
  PermutedInt8Epilogue(Params const& params, SharedStorage const& = SharedStorage()) : params_(params) {}

  CUTLASS_DEVICE bool is_source_needed() { return false; }

  // accumulators: this thread's (64 x 128 atom values, 2 along M, 1 along N) int32 of the tile at blk_coord.
  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK, BlockCoordMNKL blk_coord_mnkl,
                                 cute::Tensor<FrgEngine, FrgLayout> const& accumulators, TiledMma, ResidueMNK,
                                 int thread_idx, char*) {
    using namespace cute;
    static_assert(size<1>(BlockShapeMNK{}) == kTileN && size<0>(BlockShapeMNK{}) == kTileM,
                  "a 128 x 128 tile per warpgroup");
    static_assert(size(FrgLayout{}) == 128 && size<1>(FrgLayout{}) == 2 && size<2>(FrgLayout{}) == 1,
                  "the accumulators of two 64 x 128 wgmma atoms along M");
    static_assert(decltype(size<0, 2>(FrgLayout{}))::value == 16, "16 column groups of 8 per atom");

    int const m_total = int(get<0>(problem_shape_mnkl));
    int const m0 = int(get<0>(blk_coord_mnkl)) * kTileM;
    int const n0 = int(get<1>(blk_coord_mnkl)) * kTileN;
    int64_t const ldd = get<0>(params_.dD);
    int const warp = thread_idx / 32;
    int const lane = thread_idx % 32;
    int const quarter = lane % 4;  // q: columns 2 q, 2 q + 1 of each group of 8
    int const row0 = m0 + 16 * warp + lane / 4;

    cutlass::NumericArrayConverter<int8_t, float, 4, cutlass::FloatRoundStyle::round_to_nearest> to_int8;
    cutlass::epilogue::thread::ReLu<cutlass::Array<float, 4>> relu;

    CUTLASS_PRAGMA_UNROLL
    for (int h = 0; h < 2; ++h) {
      int const column = n0 + 64 * h + 16 * quarter;  // this thread's 16 physical columns of the half
      float4 alpha[4], bias[4];
      CUTLASS_PRAGMA_UNROLL
      for (int v = 0; v < 4; ++v) {
        alpha[v] = __ldg(reinterpret_cast<float4 const*>(params_.thread.alpha + column) + v);
        bias[v] = __ldg(reinterpret_cast<float4 const*>(params_.thread.bias + column) + v);
      }
      float const* a = reinterpret_cast<float const*>(alpha);
      float const* b = reinterpret_cast<float const*>(bias);
      CUTLASS_PRAGMA_UNROLL
      for (int mm = 0; mm < 2; ++mm) {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < 2; ++i) {
          int const row = row0 + 64 * mm + 8 * i;
          uint32_t packed[4];
          CUTLASS_PRAGMA_UNROLL
          for (int word = 0; word < 4; ++word) {  // physical 2 j' + k = 4 word + e
            cutlass::Array<float, 4> y;
            CUTLASS_PRAGMA_UNROLL
            for (int e = 0; e < 4; ++e) {
              int const jp = (4 * word + e) / 2, k = e % 2;
              int32_t acc = accumulators(make_coord(k, i, 8 * h + jp), mm, 0);
              y[e] = fmaf(a[4 * word + e], static_cast<float>(acc), b[4 * word + e]);
            }
            cutlass::Array<int8_t, 4> q = to_int8(relu(y));
            packed[word] = reinterpret_cast<uint32_t const&>(q);
          }
          if (row < m_total) {
            *reinterpret_cast<uint4*>(params_.ptr_D + int64_t(row) * ldd + column) =
                make_uint4(packed[0], packed[1], packed[2], packed[3]);
          }
        }
      }
    }
  }

 private:
  Params params_;
};

}  // namespace dlrm_cutlass
