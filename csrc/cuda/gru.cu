// GRU per-step kernels: the fused gate math and state update of one step (forward) and its
// gradient (backward). The GEMMs around them run through ATen in gru_ops.cpp.
// Thread (row, j) does unit j of the step's row `row` (that work is in gru_step.h); no two
// threads write the same element: no atomics, bitwise reproducible results.

#include "device.cuh"
#include "gru_step.h"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: GruForwardStep in launch.h; one thread per (row, unit j < H).
template <typename T, bool kBias, bool kSave>
__global__ void __launch_bounds__(kThreads) gru_forward_kernel(GruForwardStep a) {
  const int64_t j = step_column();
  if (j >= a.H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    gru_forward_unit<T, kBias, kSave>(a, row, j);
  }
}

// Shapes and aliasing: GruBackwardStep in launch.h; one thread per (row, unit j < H).
template <typename T, bool kGather>
__global__ void __launch_bounds__(kThreads) gru_backward_kernel(GruBackwardStep a) {
  const int64_t j = step_column();
  if (j >= a.H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    gru_backward_unit<T, kGather>(a, row, j);
  }
}

}  // namespace

cudaError_t gru_forward_step(DType dtype, const GruForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool bias = a.b_hh != nullptr, save = a.saved != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(bias, save, [&](auto kBias, auto kSave) {
      gru_forward_kernel<T, decltype(kBias)::value, decltype(kSave)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

cudaError_t gru_backward_step(DType dtype, const GruBackwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(gather, [&](auto kGather) {
      gru_backward_kernel<T, decltype(kGather)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

}  // namespace cuda
}  // namespace fastrnn
