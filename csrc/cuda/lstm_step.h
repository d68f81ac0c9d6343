#pragma once
// The LSTM step kernels' work for one (row, hidden unit) pair, host and device: lstm.cu
// runs them in CUDA threads, tests/native/cuda_emulation.cpp in host loops. The gate math is
// csrc/cells/lstm.h; here only indexing and conversions. Shapes and aliasing of the
// arguments: LstmForwardStep / LstmBackwardStep in launch.h.

#include "../cells/lstm.h"
#include "../common/step.h"
#include "dtypes.h"

namespace fastrnn {
namespace cuda {

// Unit j < H of the step's row `row`: reads gx, gh, c; writes c, h, y (when kWriteY) and
// saved (when kSave).
template <typename T, bool kSave, bool kWriteY>
FASTRNN_HD void lstm_forward_unit(const LstmForwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, packed = a.step.first + row;
  const T* ax = static_cast<const T*>(a.gx) + packed * lstm::kGates * H;
  const T* ah = static_cast<const T*>(a.gh) + row * lstm::kGates * H;
  A* c = static_cast<A*>(a.c) + row * H + j;
  A i, f, g, o, c_new, h_new;
  lstm::forward<A>(load(ax + j) + load(ah + j), load(ax + H + j) + load(ah + H + j),
                   load(ax + 2 * H + j) + load(ah + 2 * H + j),
                   load(ax + 3 * H + j) + load(ah + 3 * H + j), *c, i, f, g, o, c_new, h_new);
  *c = c_new;
  store(static_cast<T*>(a.h) + row * H + j, h_new);
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

// How many columns a backward step covers: H units, or P when gathering a wider h_prev.
FASTRNN_HD int64_t lstm_backward_width(const LstmBackwardStep& a) {
  return a.h_prev != nullptr && a.P > a.H ? a.P : a.H;
}

// Column j < lstm_backward_width of the step's row `row`. j < H: the gate gradient (dc in
// place, grad_gx, and m when kProj); with kGather, j < P also copies the row's h_prev.
template <typename T, bool kProj, bool kGather>
FASTRNN_HD void lstm_backward_unit(const LstmBackwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, P = a.P, packed = a.step.first + row;
  const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from c0/h0
  const T* saved = static_cast<const T*>(a.saved);
  if (j < H) {
    const T* sv = saved + packed * lstm::kSaved * H;
    A dh = load(static_cast<const T*>(a.dh) + row * H + j);
    if constexpr (!kProj) dh += load(static_cast<const T*>(a.grad_y) + packed * H + j);
    A* dc_p = static_cast<A*>(a.dc) + row * H + j;
    A dc = *dc_p;
    const A c_prev = prev >= 0 ? load(saved + prev * lstm::kSaved * H + 4 * H + j)
                               : load(static_cast<const T*>(a.c0) + row * H + j);
    const A o = load(sv + 3 * H + j), c = load(sv + 4 * H + j);
    A da_i, da_f, da_g, da_o;
    lstm::backward<A>(dh, dc, load(sv + j), load(sv + H + j), load(sv + 2 * H + j), o, c,
                      c_prev, da_i, da_f, da_g, da_o);
    *dc_p = dc;
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

}  // namespace cuda
}  // namespace fastrnn
