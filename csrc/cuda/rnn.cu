// Elman RNN (tanh or relu) per-step kernels: h = act(gx + gh) (forward) and its gradient
// (backward). The GEMMs around them run through ATen in rnn_ops.cpp.
// Thread (row, j) does unit j of the step's row `row` (that work is in rnn_step.h); no two
// threads write the same element: no atomics, bitwise reproducible results.

#include "device.cuh"
#include "rnn_step.h"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: RnnForwardStep in launch.h; one thread per (row, unit j < H).
template <typename T, bool kRelu>
__global__ void __launch_bounds__(kThreads) rnn_forward_kernel(RnnForwardStep a) {
  const int64_t j = step_column();
  if (j >= a.H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    rnn_forward_unit<T, kRelu>(a, row, j);
  }
}

// Shapes and aliasing: RnnBackwardStep in launch.h; one thread per (row, unit j < H).
template <typename T, bool kRelu, bool kGather>
__global__ void __launch_bounds__(kThreads) rnn_backward_kernel(RnnBackwardStep a) {
  const int64_t j = step_column();
  if (j >= a.H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    rnn_backward_unit<T, kRelu, kGather>(a, row, j);
  }
}

}  // namespace

cudaError_t rnn_forward_step(DType dtype, const RnnForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(a.relu, [&](auto kRelu) {
      rnn_forward_kernel<T, decltype(kRelu)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

cudaError_t rnn_backward_step(DType dtype, const RnnBackwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flags(a.relu, gather, [&](auto kRelu, auto kGather) {
      rnn_backward_kernel<T, decltype(kRelu)::value, decltype(kGather)::value><<<grid, kThreads, 0, stream>>>(a);
      return cudaGetLastError();
    });
  });
}

}  // namespace cuda
}  // namespace fastrnn
