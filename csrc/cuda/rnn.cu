// Elman RNN (tanh or relu) per-step kernels: h = act(gx + gh) (forward) and its gradient
// (backward). The GEMMs around them run through ATen in rnn_ops.cpp.
// Thread (row, j) handles hidden unit j of the step's row `row`; no two threads write the
// same element, so there are no atomics and results are bitwise reproducible.

#include "../cells/rnn.h"
#include "device.cuh"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: see RnnForwardStep in launch.h. Writes h (rows [0, rows)) and y.
template <typename T, bool kRelu>
__global__ void __launch_bounds__(kThreads) rnn_forward_kernel(RnnForwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= H) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const A h = rnn::forward<kRelu, A>(load(static_cast<const T*>(a.gx) + packed * H + j) +
                                       load(static_cast<const T*>(a.gh) + row * H + j));
    store(static_cast<T*>(a.h) + row * H + j, h);
    store(static_cast<T*>(a.y) + packed * H + j, h);
  }
}

// Shapes and aliasing: see RnnBackwardStep in launch.h. Writes grad_gx rows and, when
// kGather, the rows' h_prev.
template <typename T, bool kRelu, bool kGather>
__global__ void __launch_bounds__(kThreads) rnn_backward_kernel(RnnBackwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= H) return;
  const T* y = static_cast<const T*>(a.y);
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const A dh = load(static_cast<const T*>(a.dh) + row * H + j) +
                 load(static_cast<const T*>(a.grad_y) + packed * H + j);
    store(static_cast<T*>(a.grad_gx) + packed * H + j,
          rnn::backward<kRelu, A>(dh, load(y + packed * H + j)));
    if constexpr (kGather) {
      const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from h0
      static_cast<T*>(a.h_prev)[packed * H + j] =
          prev >= 0 ? y[prev * H + j] : static_cast<const T*>(a.h0)[row * H + j];
    }
  }
}

}  // namespace

cudaError_t rnn_forward_step(DType dtype, const RnnForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.relu) {
      rnn_forward_kernel<T, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      rnn_forward_kernel<T, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

cudaError_t rnn_backward_step(DType dtype, const RnnBackwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.relu && gather) {
      rnn_backward_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(a);
    } else if (a.relu) {
      rnn_backward_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(a);
    } else if (gather) {
      rnn_backward_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      rnn_backward_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastrnn
