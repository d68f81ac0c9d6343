#pragma once
// The clockwork RNN's per-step work on CUDA for one (row, unit j), host and device (the
// kernels of step_kernels.cu run it; the walk is clockwork_cuda.cpp): the cell's policy on
// the units of the step's active modules, a copy (forward) or a pass-through of the
// gradient (backward) on the others. Every pointer is to contiguous row-major data in the
// storage type T; a step's rows are `step`'s (common/step.h): packed rows [first,
// first + rows) of y and grad_y, rows [0, rows) of the [B, *] buffers.

#include <cstdint>

#include "../common/step.h"
#include "element_types.h"

namespace fastrnn {
namespace cuda {

struct ClockworkStepArgs {
  const void* pre;     // forward: [>= rows, H] active units' pre-activations (gx + products)
  void* h;             // forward: [B, H] the h state; active units replaced
  void* y;             // [N, H] forward: rows written; backward: read (the cell's output)
  const void* grad_y;  // backward: [N, H]
  void* dh;            // backward: [B, H] w.r.t. the h state; replaced by w.r.t. h_prev's
                       //   direct part (inactive units), 0 for active units
  void* dx;            // backward: [>= rows, H] active units' gradient w.r.t. pre, written
  uint64_t active;     // bit i: module i is active at this step
  int64_t H, k;        // hidden units, units per module
  Step step;
};

template <class Cell, class T>
struct ClockworkForwardUnit {
  using Args = ClockworkStepArgs;
  FASTRNN_HD static int64_t width(const Args& a) { return a.H; }
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t j) {
    using A = acc_t<T>;
    T* h = static_cast<T*>(a.h) + row * a.H + j;
    if ((a.active >> (j / a.k)) & 1) {
      const A x = to_acc(static_cast<const T*>(a.pre)[row * a.H + j]), hh = A(0);
      A carry = A(0), saved[1];
      *h = from_acc<T>(Cell::forward(&x, &hh, to_acc(*h), carry, saved,
                                     static_cast<const A*>(nullptr)));
    }
    static_cast<T*>(a.y)[(a.step.first + row) * a.H + j] = *h;
  }
};

template <class Cell, class T>
struct ClockworkBackwardUnit {
  using Args = ClockworkStepArgs;
  FASTRNN_HD static int64_t width(const Args& a) { return a.H; }
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t j) {
    using A = acc_t<T>;
    const int64_t packed = a.step.first + row;
    T* dh = static_cast<T*>(a.dh) + row * a.H + j;
    const A total = to_acc(*dh) + to_acc(static_cast<const T*>(a.grad_y)[packed * a.H + j]);
    if ((a.active >> (j / a.k)) & 1) {
      A carry = A(0), dx, dgh;
      const A h = to_acc(static_cast<const T*>(a.y)[packed * a.H + j]);
      Cell::backward(total, carry, static_cast<const A*>(nullptr), h, A(0),
                     static_cast<const A*>(nullptr), &dx, &dgh);
      static_cast<T*>(a.dx)[row * a.H + j] = from_acc<T>(dx);
      *dh = from_acc<T>(A(0));
    } else {
      *dh = from_acc<T>(total);
    }
  }
};

}  // namespace cuda
}  // namespace fastrnn
