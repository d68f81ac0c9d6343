#pragma once
// The Elman RNN step kernels' work for one (row, hidden unit) pair, host and device:
// rnn.cu runs them in CUDA threads, tests/native/cuda_emulation.cpp in host loops. The math is
// csrc/cells/rnn.h; here only indexing and conversions. Shapes and aliasing of the
// arguments: RnnForwardStep / RnnBackwardStep in launch.h.

#include "../cells/rnn.h"
#include "../common/step.h"
#include "dtypes.h"

namespace fastrnn {
namespace cuda {

// Unit j < H of the step's row `row`: h = act(gx + gh) into h and y.
template <typename T, bool kRelu>
FASTRNN_HD void rnn_forward_unit(const RnnForwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, packed = a.step.first + row;
  const A h = rnn::forward<kRelu, A>(load(static_cast<const T*>(a.gx) + packed * H + j) +
                                     load(static_cast<const T*>(a.gh) + row * H + j));
  store(static_cast<T*>(a.h) + row * H + j, h);
  store(static_cast<T*>(a.y) + packed * H + j, h);
}

// Unit j < H of the step's row `row`: writes grad_gx and, when kGather, the row's h_prev.
template <typename T, bool kRelu, bool kGather>
FASTRNN_HD void rnn_backward_unit(const RnnBackwardStep& a, int64_t row, int64_t j) {
  using A = acc_t<T>;
  const int64_t H = a.H, packed = a.step.first + row;
  const T* y = static_cast<const T*>(a.y);
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

}  // namespace cuda
}  // namespace fastrnn
