// The int32 accumulator as fp32, for a CUTLASS sm90 epilogue tree, without the conversion instruction.
//
// CUTLASS converts the accumulator with I2FP.F32.S32, which on Hopper issues at a quarter of the fp32 rate or less
// (conversions share a narrow pipe; F2IP, the int8 output conversion, uses it too). In the top MLP's layer 0
// (K = 512) the epilogue, not the tensor cores, sets the pace, and one I2FP per output element is the largest part
// of its conversion work.
//
// Here: bits = acc + 0x4B400000 read as a float is 1.5 * 2^23 + acc exactly while -2^22 <= acc < 2^22 (the integer
// lands in the mantissa of a float of the binade [2^23, 2^24), whose step is 1), so float(acc) = that float -
// 12582912, one integer add and one exact fp32 subtraction. Each thread checks its whole fragment with two running
// bitwise reductions (every element's bits 31..23 must be 0x96, the binade's sign and exponent); a fragment with any
// value outside the range is converted again with I2FP. Either way the value is float(acc) exactly, so the
// epilogue's bytes are those of Sm90AccFetch followed by CUTLASS's conversion.
#pragma once

#include <cstdint>

#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"

namespace dlrm_cutlass {

struct Sm90ExactAccToFloat : cutlass::epilogue::fusion::Sm90VisitorImpl<> {
  using Sm90VisitorImpl<>::Sm90VisitorImpl;

  static constexpr uint32_t kMagicBits = 0x4B400000u;  // 1.5 * 2^23 as fp32
  static constexpr float kMagic = 12582912.0f;
  static constexpr uint32_t kBinade = 0x96u;           // bits 31..23 of every float in [2^23, 2^24)

  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::EmptyConsumerStoreCallbacks {
    // acc: one thread's fragment of the subtile (FragmentSize int32) -> the same values as fp32.
    template <int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<float, FragmentSize> visit(cutlass::Array<int32_t, FragmentSize> const& acc,
                                                             int, int, int) {
      cutlass::Array<float, FragmentSize> out;
      uint32_t all_and = 0xffffffffu;
      uint32_t all_or = 0u;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) {
        uint32_t bits = static_cast<uint32_t>(acc[i]) + kMagicBits;
        all_and &= bits;
        all_or |= bits;
        out[i] = __uint_as_float(bits) - kMagic;
      }
      if ((all_and >> 23) != kBinade || (all_or >> 23) != kBinade) {
        convert_with_i2f(acc, out);  // some |acc| >= 2^22: rare (|acc| <= K * 128 * 127)
      }
      return out;
    }

    template <int FragmentSize>
    CUTLASS_DEVICE static void convert_with_i2f(cutlass::Array<int32_t, FragmentSize> const& acc,
                                                cutlass::Array<float, FragmentSize>& out) {
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) {
        out[i] = static_cast<float>(acc[i]);
      }
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::ConsumerStoreArgs<Args...> const&) {
    return ConsumerStoreCallbacks{};
  }
};

}  // namespace dlrm_cutlass
