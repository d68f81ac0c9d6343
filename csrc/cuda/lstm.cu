// LSTM per-step kernels: the fused gate math and state update of one step (forward) and its
// gradient (backward). The GEMMs around them run through ATen in lstm_ops.cpp.
// Thread (row, j) does unit j of the step's row `row` (that work is in lstm_step.h); no two
// threads write the same element: no atomics, bitwise reproducible results.

#include "device.cuh"
#include "lstm_step.h"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: LstmForwardStep in launch.h; one thread per (row, unit j < H).
template <typename T, bool kSave, bool kWriteY>
__global__ void __launch_bounds__(kThreads) lstm_forward_kernel(LstmForwardStep a) {
  const int64_t j = step_column();
  if (j >= a.H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    lstm_forward_unit<T, kSave, kWriteY>(a, row, j);
  }
}

// Shapes and aliasing: LstmBackwardStep in launch.h; one thread per (row, column j <
// lstm_backward_width).
template <typename T, bool kProj, bool kGather>
__global__ void __launch_bounds__(kThreads) lstm_backward_kernel(LstmBackwardStep a) {
  const int64_t j = step_column();
  if (j >= lstm_backward_width(a)) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    lstm_backward_unit<T, kProj, kGather>(a, row, j);
  }
}

}  // namespace

cudaError_t lstm_forward_step(DType dtype, const LstmForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool save = a.saved != nullptr, write_y = a.y != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(save, write_y, [&](auto kSave, auto kWriteY) {
      lstm_forward_kernel<T, decltype(kSave)::value, decltype(kWriteY)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

cudaError_t lstm_backward_step(DType dtype, const LstmBackwardStep& a, cudaStream_t stream) {
  const bool proj = a.m != nullptr, gather = a.h_prev != nullptr;
  const int64_t width = lstm_backward_width(a);
  if (empty_launch(a.step.rows, width)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, width);
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(proj, gather, [&](auto kProj, auto kGather) {
      lstm_backward_kernel<T, decltype(kProj)::value, decltype(kGather)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

}  // namespace cuda
}  // namespace fastrnn
