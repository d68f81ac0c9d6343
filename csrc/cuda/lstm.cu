// LSTM per-step kernels: the fused gate math and state update of one step (forward) and its
// gradient (backward). The GEMMs around them run through ATen in lstm_ops.cpp.
// Thread (row, j) handles hidden unit j of the step's row `row`; no two threads write the
// same element, so there are no atomics and results are bitwise reproducible.

#include "../cells/lstm.h"
#include "device.cuh"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: see LstmForwardStep in launch.h. Writes c, h (rows [0, rows)),
// y (when kWriteY) and saved (when kSave) for the step's packed rows.
template <typename T, bool kSave, bool kWriteY>
__global__ void __launch_bounds__(kThreads) lstm_forward_kernel(LstmForwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= H) return;
  const T* gx = static_cast<const T*>(a.gx);
  const T* gh = static_cast<const T*>(a.gh);
  T* c = static_cast<T*>(a.c);
  T* h = static_cast<T*>(a.h);
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const T* ax = gx + packed * 4 * H;
    const T* ah = gh + row * 4 * H;
    A i, f, g, o, c_new, h_new;
    lstm::forward<A>(load(ax + j) + load(ah + j), load(ax + H + j) + load(ah + H + j),
                     load(ax + 2 * H + j) + load(ah + 2 * H + j),
                     load(ax + 3 * H + j) + load(ah + 3 * H + j), load(c + row * H + j), i, f,
                     g, o, c_new, h_new);
    store(c + row * H + j, c_new);
    store(h + row * H + j, h_new);
    if constexpr (kWriteY) store(static_cast<T*>(a.y) + packed * H + j, h_new);
    if constexpr (kSave) {
      T* sv = static_cast<T*>(a.saved) + packed * lstm::kSaved * H;
      store(sv + j, i);
      store(sv + H + j, f);
      store(sv + 2 * H + j, g);
      store(sv + 3 * H + j, o);
      store(sv + 4 * H + j, c_new);
    }
  }
}

// Shapes and aliasing: see LstmBackwardStep in launch.h. Columns j < H do the gate
// gradient (dc in place, grad_gx rows, m rows when kProj); with kGather columns j < P also
// copy the row's h_prev into h_prev (for the weight gradient of a packed sequence).
template <typename T, bool kProj, bool kGather>
__global__ void __launch_bounds__(kThreads) lstm_backward_kernel(LstmBackwardStep a) {
  using A = acc_t<T>;
  const int64_t H = a.H, P = a.P;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= (kGather && P > H ? P : H)) return;
  const T* saved = static_cast<const T*>(a.saved);
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) {
    const int64_t packed = a.step.first + row;
    const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from c0/h0
    if (j < H) {
      const T* sv = saved + packed * lstm::kSaved * H;
      A dh = load(static_cast<const T*>(a.dh) + row * H + j);
      if constexpr (!kProj) dh += load(static_cast<const T*>(a.grad_y) + packed * H + j);
      T* dc_p = static_cast<T*>(a.dc) + row * H + j;
      A dc = load(dc_p);
      const A c_prev = prev >= 0 ? load(saved + prev * lstm::kSaved * H + 4 * H + j)
                                 : load(static_cast<const T*>(a.c0) + row * H + j);
      const A o = load(sv + 3 * H + j), c = load(sv + 4 * H + j);
      A da_i, da_f, da_g, da_o;
      lstm::backward<A>(dh, dc, load(sv + j), load(sv + H + j), load(sv + 2 * H + j), o, c,
                        c_prev, da_i, da_f, da_g, da_o);
      store(dc_p, dc);
      T* da = static_cast<T*>(a.grad_gx) + packed * lstm::kGates * H;
      store(da + j, da_i);
      store(da + H + j, da_f);
      store(da + 2 * H + j, da_g);
      store(da + 3 * H + j, da_o);
      if constexpr (kProj) store(static_cast<T*>(a.m) + packed * H + j, lstm::hidden<A>(o, c));
    }
    if constexpr (kGather) {
      if (j < P) {
        static_cast<T*>(a.h_prev)[packed * P + j] =
            prev >= 0 ? static_cast<const T*>(a.y)[prev * P + j]
                      : static_cast<const T*>(a.h0)[row * P + j];
      }
    }
  }
}

}  // namespace

cudaError_t lstm_forward_step(DType dtype, const LstmForwardStep& a, cudaStream_t stream) {
  if (empty_launch(a.step.rows, a.H)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, a.H);
  const bool save = a.saved != nullptr, write_y = a.y != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (save && write_y) {
      lstm_forward_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(a);
    } else if (save) {
      lstm_forward_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(a);
    } else if (write_y) {
      lstm_forward_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      lstm_forward_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

cudaError_t lstm_backward_step(DType dtype, const LstmBackwardStep& a, cudaStream_t stream) {
  const bool proj = a.m != nullptr, gather = a.h_prev != nullptr;
  const int64_t width = gather && a.P > a.H ? a.P : a.H;
  if (empty_launch(a.step.rows, width)) return cudaSuccess;
  const dim3 grid = step_grid(a.step.rows, width);
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (proj && gather) {
      lstm_backward_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(a);
    } else if (proj) {
      lstm_backward_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(a);
    } else if (gather) {
      lstm_backward_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(a);
    } else {
      lstm_backward_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(a);
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastrnn
