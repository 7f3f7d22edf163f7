// What the CUTLASS sources share: the problem arguments of a row-major int8 A [M, K] times a K-major B [N, K]
// into a row-major D [M, N], and the launch sequence with the C ABI's return codes:
//   0 success; 1 shape or alignment not supported (can_implement); 2 workspace too small; 3 initialize failed;
//   4 launch failed; 5 a CUDA error after the launch; 6 cannot select `device`.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"

namespace dlrm_cutlass {

// The GEMM's arguments with the epilogue's own (thread) arguments left at their defaults for the caller to fill.
// d: D's pointer (nullptr where the epilogue stores no D); ldd: D's row stride.
template <class Gemm, class DPointer>
typename Gemm::Arguments int8_gemm_arguments(const int8_t* a, const int8_t* b, DPointer d, int m, int n, int k,
                                             int lda, int ldb, int ldd, int sm_count, int device) {
  using Kernel = typename Gemm::GemmKernel;
  typename Kernel::StrideA stride_a = cute::make_stride(int64_t(lda), cute::Int<1>{}, int64_t(0));
  typename Kernel::StrideB stride_b = cute::make_stride(int64_t(ldb), cute::Int<1>{}, int64_t(0));
  typename Kernel::StrideD stride_d = cute::make_stride(int64_t(ldd), cute::Int<1>{}, int64_t(0));
  cutlass::KernelHardwareInfo hw;
  hw.device_id = device;
  hw.sm_count = sm_count;
  return {cutlass::gemm::GemmUniversalMode::kGemm,
          {m, n, k, 1},
          {a, stride_a, b, stride_b},
          {{}, nullptr, stride_d, d, stride_d},
          hw};
}

// The workspace half of the interface CUTLASS asks of an epilogue or an epilogue-tree node: none needed.
struct NoWorkspace {
  template <class ProblemShape, class Arguments>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }

  template <class ProblemShape, class Arguments>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
};

// Check, set up (TMA descriptors, the epilogue's workspace fills) and launch on `stream`.
template <class Gemm>
int launch(typename Gemm::Arguments const& args, int device, void* workspace, size_t workspace_bytes,
           cudaStream_t stream) {
  // This library links its own CUDA runtime, whose current device is not PyTorch's: name the stream's device.
  if (cudaSetDevice(device) != cudaSuccess) return 6;
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 1;
  if (Gemm::get_workspace_size(args) > workspace_bytes) return 2;
  if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return 3;
  if (gemm.run(stream) != cutlass::Status::kSuccess) return 4;
  return cudaGetLastError() == cudaSuccess ? 0 : 5;
}

}  // namespace dlrm_cutlass
