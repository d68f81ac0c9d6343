#pragma once
// The GRU step kernels' work for one (row, hidden unit) pair, host and device: gru.cu runs
// them in CUDA threads, tests/native/cuda_emulation.cpp in host loops. The gate math is
// csrc/cells/gru.h; here only indexing and conversions. Shapes and aliasing of the
// arguments: GruForwardStep / GruBackwardStep in launch.h.

#include "../cells/gru.h"
#include "../common/step.h"
#include "dtypes.h"

namespace fastrnn {
namespace cuda {

// Unit j < H of the step's row `row`: b_hh (when kBias) is added on the recurrent side,
// inside r * (.) for n. Reads gx, gh, h; writes h, y and saved (when kSave).
template <typename T, bool kBias, bool kSave>
FASTRNN_HD void gru_forward_unit(const GruForwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, packed = a.step.first + row;
  A b_r = A(0), b_z = A(0), b_n = A(0);
  if constexpr (kBias) {
    const T* b = static_cast<const T*>(a.b_hh);
    b_r = load(b + j);
    b_z = load(b + H + j);
    b_n = load(b + 2 * H + j);
  }
  const T* x = static_cast<const T*>(a.gx) + packed * gru::kGates * H;
  const T* hh = static_cast<const T*>(a.gh) + row * gru::kGates * H;
  T* h = static_cast<T*>(a.h) + row * H + j;
  const A h_n = load(hh + 2 * H + j) + b_n;
  A r, z, n, h_new;
  gru::forward<A>(load(x + j), load(x + H + j), load(x + 2 * H + j), load(hh + j) + b_r,
                  load(hh + H + j) + b_z, h_n, load(h), r, z, n, h_new);
  store(h, h_new);
  store(static_cast<T*>(a.y) + packed * H + j, h_new);
  if constexpr (kSave) {
    T* sv = static_cast<T*>(a.saved) + packed * gru::kSaved * H;
    store(sv + j, r);
    store(sv + H + j, z);
    store(sv + 2 * H + j, n);
    store(sv + 3 * H + j, h_n);
  }
}

// Unit j < H of the step's row `row`: writes grad_gx and grad_gh, replaces dh_direct and,
// when kGather, writes the row's h_prev.
template <typename T, bool kGather>
FASTRNN_HD void gru_backward_unit(const GruBackwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, packed = a.step.first + row;
  const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from h0
  const T h_prev = prev >= 0 ? static_cast<const T*>(a.y)[prev * H + j]
                             : static_cast<const T*>(a.h0)[row * H + j];
  const T* sv = static_cast<const T*>(a.saved) + packed * gru::kSaved * H;
  T* dh_direct = static_cast<T*>(a.dh_direct) + row * H + j;
  const A dh = load(static_cast<const T*>(a.dh) + row * H + j) + load(dh_direct) +
               load(static_cast<const T*>(a.grad_y) + packed * H + j);
  A dx_r, dx_z, dx_n, dh_n, dh_prev_direct;
  gru::backward<A>(dh, load(sv + j), load(sv + H + j), load(sv + 2 * H + j), load(sv + 3 * H + j),
                   load(&h_prev), dx_r, dx_z, dx_n, dh_n, dh_prev_direct);
  T* dx = static_cast<T*>(a.grad_gx) + packed * gru::kGates * H;
  T* dhh = static_cast<T*>(a.grad_gh) + packed * gru::kGates * H;
  store(dx + j, dx_r);
  store(dx + H + j, dx_z);
  store(dx + 2 * H + j, dx_n);
  store(dhh + j, dx_r);
  store(dhh + H + j, dx_z);
  store(dhh + 2 * H + j, dh_n);
  store(dh_direct, dh_prev_direct);
  if constexpr (kGather) static_cast<T*>(a.h_prev)[packed * H + j] = h_prev;
}

}  // namespace cuda
}  // namespace fastrnn
