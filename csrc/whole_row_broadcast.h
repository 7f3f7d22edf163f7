// A per-column fp32 vector (alpha[n], bias[n], ...) as a leaf of a CUTLASS sm90 epilogue tree, held whole in
// shared memory.
//
// CUTLASS's Sm90RowBroadcast copies the tile's 128-column slice from global memory into shared memory at the start
// of every tile's epilogue and then waits for it at a barrier: an L2 round trip (and a barrier) on the epilogue's
// critical path, once per tile. With K = 512 (the top MLP's layer 0 and final layer) a tile's MMAs last ~2,000
// cycles, which is about what the other warpgroup's epilogue may take before the tensor cores idle.
//
// Here each consumer warpgroup copies the whole vector (N <= MaxN values) into its own shared-memory slice once, at
// its first tile, and every later tile only reads its columns from there. The value a thread reads for a column is
// the one Sm90RowBroadcast would give, so the epilogue's result is unchanged.
//
// For the pingpong kernels (two consumer warpgroups after one producer warpgroup, each warpgroup's epilogue over
// its own tile; warpgroup w of the CTA has threads 128 w .. 128 w + 127). Columns of the last tile at or past N
// read 0.
#pragma once

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass_launch.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"

namespace dlrm_cutlass {

template <int MaxN, class CtaTileShapeMNK>
struct Sm90WholeRowBroadcast : NoWorkspace {
  static constexpr int kConsumerWarpGroups = 2;
  static constexpr int kWarpGroupThreads = 128;
  static constexpr int kTileN = cute::size<1>(CtaTileShapeMNK{});
  static_assert(MaxN % kTileN == 0, "MaxN must be a whole number of tiles");

  struct SharedStorage {
    cute::array_aligned<float, MaxN * kConsumerWarpGroups> smem;
  };

  struct Arguments {
    float const* ptr_row = nullptr;  // [N] in global memory
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& problem_shape, Arguments const& args) {
    return int(cute::get<1>(problem_shape)) <= MaxN;
  }

  CUTLASS_HOST_DEVICE Sm90WholeRowBroadcast() {}

  CUTLASS_HOST_DEVICE Sm90WholeRowBroadcast(Params const& params, SharedStorage const& shared_storage)
      : params(params), smem(const_cast<float*>(shared_storage.smem.data())) {}

  Params params;
  float* smem = nullptr;
  bool loaded = false;  // per thread; uniform over a warpgroup, which walks its tiles together

  CUTLASS_DEVICE bool is_producer_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_C_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_zero() const { return false; }

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::EmptyProducerLoadCallbacks{};
  }

  template <class SR_STensor, class SR_RTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::EmptyConsumerStoreCallbacks {
    CUTLASS_DEVICE ConsumerStoreCallbacks(float* slice, float const* row, int n, int padded_n, bool first,
                                          int thread_idx, SR_STensor tSR_sRow, SR_RTensor tSR_rRow)
        : slice(slice), row(row), n(n), padded_n(padded_n), first(first), thread_idx(thread_idx),
          tSR_sRow(tSR_sRow), tSR_rRow(tSR_rRow) {}

    float* slice;        // this warpgroup's copy, [padded_n]
    float const* row;    // the vector in global memory, [n]
    int n;
    int padded_n;        // n rounded up to whole tiles
    bool first;          // this warpgroup's first tile: copy the vector in
    int thread_idx;      // within the warpgroup
    SR_STensor tSR_sRow;  // (CPY,CPY_M,CPY_N,EPI_M,EPI_N): this thread's columns of the tile, in shared memory
    SR_RTensor tSR_rRow;  // (CPY,CPY_M,CPY_N): the current subtile's values in registers

    CUTLASS_DEVICE void begin() {
      if (!first) return;
      for (int i = thread_idx; i < padded_n; i += kWarpGroupThreads) {
        slice[i] = i < n ? row[i] : 0.0f;
      }
    }

    // Only the first tile wrote the slice; the epilogue's barrier then makes it visible to the warpgroup.
    CUTLASS_DEVICE bool begin_sync_needed() const { return first; }

    CUTLASS_DEVICE void begin_loop(int epi_m, int epi_n) {
      using namespace cute;
      if (epi_m != 0) return;  // the values depend on the column only; the subtile loop is M-major
      Tensor src = filter_zeros(tSR_sRow(_, _, _, epi_m, epi_n));
      Tensor dst = filter(tSR_rRow);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < size(src); ++i) {
        dst(i) = src(i);
      }
    }

    template <typename ElementAccumulator, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<float, FragmentSize> visit(cutlass::Array<ElementAccumulator, FragmentSize> const&,
                                                             int epi_v, int, int) {
      cutlass::Array<float, FragmentSize> values;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) {
        values[i] = tSR_rRow(epi_v * FragmentSize + i);
      }
      return values;
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::ConsumerStoreArgs<Args...> const& args) {
    using namespace cute;
    int n = int(get<1>(args.problem_shape_mnkl));
    int padded_n = (n + kTileN - 1) / kTileN * kTileN;
    int warp_group = int(threadIdx.x) / kWarpGroupThreads - 1;  // the producer warpgroup is the CTA's first
    float* slice = smem + warp_group * MaxN;
    bool first = !loaded;
    loaded = true;

    int n_tile = int(get<1>(args.tile_coord_mnkl));
    Tensor sRow = make_tensor(make_smem_ptr(slice + n_tile * kTileN),
                              make_layout(take<0, 2>(CtaTileShapeMNK{}), make_stride(_0{}, _1{})));  // (CTA_M, CTA_N)
    Tensor tSR_sRow = cutlass::epilogue::fusion::sm90_partition_for_epilogue<ReferenceSrc>(
        sRow, args.epi_tile, args.tiled_copy, args.thread_idx);
    Tensor tSR_rRow = make_tensor_like<float>(take<0, 3>(tSR_sRow));
    return ConsumerStoreCallbacks<decltype(tSR_sRow), decltype(tSR_rRow)>(
        slice, params.ptr_row, n, padded_n, first, args.thread_idx, tSR_sRow, tSR_rRow);
  }
};

template <class T>
struct IsWholeRowBroadcast : cute::false_type {};
template <int MaxN, class CtaTileShapeMNK>
struct IsWholeRowBroadcast<Sm90WholeRowBroadcast<MaxN, CtaTileShapeMNK>> : cute::true_type {};

// The arguments of a per-column leaf over `values` [N]: Sm90WholeRowBroadcast's (the pointer) or CUTLASS's
// Sm90RowBroadcast's (the pointer, the value for a null pointer, the stride).
template <class PerColumn>
typename PerColumn::Arguments per_column_arguments(const float* values) {
  if constexpr (IsWholeRowBroadcast<PerColumn>::value) {
    return {values};
  } else {
    return {values, 0.0f, {}};
  }
}

}  // namespace dlrm_cutlass
