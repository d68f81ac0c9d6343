// GRU per-step kernels: the fused gate math and state update of one step (forward) and its
// gradient (backward). The GEMMs around them run through ATen in gru_ops.cpp.
// Thread (row, j) handles hidden unit j of the step's row `row`; no two threads write the
// same element, so there are no atomics and results are bitwise reproducible.

#include "../cells/gru.h"
#include "device.cuh"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: see GruForwardStep in launch.h. b_hh is added on the recurrent side
// (inside r * (.) for n); writes h (rows [0, rows)), y and, when kSave, saved.
template <typename T, bool kBias, bool kSave>
__global__ void __launch_bounds__(kThreads) gru_forward_kernel(GruForwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= H) return;
  A b_r = A(0), b_z = A(0), b_n = A(0);
  if constexpr (kBias) {
    const T* b = static_cast<const T*>(a.b_hh);
    b_r = load(b + j);
    b_z = load(b + H + j);
    b_n = load(b + 2 * H + j);
  }
  T* h = static_cast<T*>(a.h);
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const T* x = static_cast<const T*>(a.gx) + packed * gru::kGates * H;
    const T* hh = static_cast<const T*>(a.gh) + row * gru::kGates * H;
    const A h_n = load(hh + 2 * H + j) + b_n;
    A r, z, n, h_new;
    gru::forward<A>(load(x + j), load(x + H + j), load(x + 2 * H + j), load(hh + j) + b_r,
                    load(hh + H + j) + b_z, h_n, load(h + row * H + j), r, z, n, h_new);
    store(h + row * H + j, h_new);
    store(static_cast<T*>(a.y) + packed * H + j, h_new);
    if constexpr (kSave) {
      T* sv = static_cast<T*>(a.saved) + packed * gru::kSaved * H;
      store(sv + j, r);
      store(sv + H + j, z);
      store(sv + 2 * H + j, n);
      store(sv + 3 * H + j, h_n);
    }
  }
}

// Shapes and aliasing: see GruBackwardStep in launch.h. Writes grad_gx and grad_gh rows,
// replaces dh_direct rows [0, rows) and, when kGather, writes the rows' h_prev.
template <typename T, bool kGather>
__global__ void __launch_bounds__(kThreads) gru_backward_kernel(GruBackwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= H) return;
  T* dh_direct = static_cast<T*>(a.dh_direct);
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from h0
    const T h_prev = prev >= 0 ? static_cast<const T*>(a.y)[prev * H + j]
                               : static_cast<const T*>(a.h0)[row * H + j];
    const T* sv = static_cast<const T*>(a.saved) + packed * gru::kSaved * H;
    const A dh = load(static_cast<const T*>(a.dh) + row * H + j) + load(dh_direct + row * H + j) +
                 load(static_cast<const T*>(a.grad_y) + packed * H + j);
    A dx_r, dx_z, dx_n, dh_n, dh_prev_direct;
    gru::backward<A>(dh, load(sv + j), load(sv + H + j), load(sv + 2 * H + j),
                     load(sv + 3 * H + j), load(&h_prev), dx_r, dx_z, dx_n, dh_n,
                     dh_prev_direct);
    T* dx = static_cast<T*>(a.grad_gx) + packed * gru::kGates * H;
    T* dhh = static_cast<T*>(a.grad_gh) + packed * gru::kGates * H;
    store(dx + j, dx_r);
    store(dx + H + j, dx_z);
    store(dx + 2 * H + j, dx_n);
    store(dhh + j, dx_r);
    store(dhh + H + j, dx_z);
    store(dhh + 2 * H + j, dh_n);
    store(dh_direct + row * H + j, dh_prev_direct);
    if constexpr (kGather) static_cast<T*>(a.h_prev)[packed * H + j] = h_prev;
  }
}

}  // namespace

cudaError_t gru_forward_step(DType dtype, const GruForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool bias = a.b_hh != nullptr, save = a.saved != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (bias && save) {
      gru_forward_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(a);
    } else if (bias) {
      gru_forward_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(a);
    } else if (save) {
      gru_forward_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      gru_forward_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

cudaError_t gru_backward_step(DType dtype, const GruBackwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (gather) {
      gru_backward_kernel<T, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      gru_backward_kernel<T, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastrnn
