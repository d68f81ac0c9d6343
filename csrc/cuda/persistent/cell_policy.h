#pragma once
// What the persistent kernels need to know about each cell, per (row, unit), as thin
// wrappers over the one copy of the gate math in csrc/cells/*.h. A is the accumulation
// type (float on the device, float or double in the host emulation).
//
// carry: the per-unit value a block keeps across steps in shared memory.
//   forward:  LSTM c; GRU, RNN none.
//   backward: LSTM dc (gradient w.r.t. c); GRU the direct part dh * z of the gradient
//             w.r.t. h_prev; RNN none.
// prev (backward): LSTM c_prev (slot 4 of the previous row's saved, or c0); GRU h_prev
// (the previous row of y, or h0); RNN unused.

#include "../../cells/gru.h"
#include "../../cells/lstm.h"
#include "../../cells/rnn.h"

namespace fastrnn {
namespace persistent {

struct LstmPolicy {
  static constexpr int kGates = lstm::kGates, kSaved = lstm::kSaved;
  static constexpr bool kForwardCarry = true, kBackwardCarry = true;
  static constexpr bool kSeparateDgh = false;  // gradient w.r.t. gh == w.r.t. gx
  static constexpr bool kPrevFromY = false;    // prev = c_prev from saved slot 4 / c0

  // x, hh: [G] input- and recurrent-side pre-activations. Returns h.
  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A /*h_prev*/, A& carry, A* saved) {
    A c_new, h;
    lstm::forward<A>(x[0] + hh[0], x[1] + hh[1], x[2] + hh[2], x[3] + hh[3], carry, saved[0],
                     saved[1], saved[2], saved[3], c_new, h);
    saved[4] = c_new;
    carry = c_new;
    return h;
  }

  // dh: gradient w.r.t. h (recurrent part + grad_y); carry: dc in, dc_prev out.
  template <class A>
  FASTRNN_HD static void backward(A dh, A& carry, const A* saved, A /*h*/, A prev, A* dx,
                                  A* dgh) {
    lstm::backward<A>(dh, carry, saved[0], saved[1], saved[2], saved[3], saved[4], prev, dx[0],
                      dx[1], dx[2], dx[3]);
    for (int g = 0; g < kGates; ++g) dgh[g] = dx[g];
  }
  // The gradient w.r.t. h0 of a row whose first step was the one just differentiated.
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
};

struct GruPolicy {
  static constexpr int kGates = gru::kGates, kSaved = gru::kSaved;
  static constexpr bool kForwardCarry = false, kBackwardCarry = true;
  static constexpr bool kSeparateDgh = true;  // dh_n = dx_n * r differs from dx_n
  static constexpr bool kPrevFromY = true;

  // hh already includes b_hh.
  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A h_prev, A& /*carry*/, A* saved) {
    A h;
    gru::forward<A>(x[0], x[1], x[2], hh[0], hh[1], hh[2], h_prev, saved[0], saved[1], saved[2],
                    h);
    saved[3] = hh[2];
    return h;
  }
  // carry: dh_direct from the later step in, this step's dh * z out.
  template <class A>
  FASTRNN_HD static void backward(A dh, A& carry, const A* saved, A /*h*/, A prev, A* dx,
                                  A* dgh) {
    A dh_n, direct;
    gru::backward<A>(dh + carry, saved[0], saved[1], saved[2], saved[3], prev, dx[0], dx[1],
                     dx[2], dh_n, direct);
    dgh[0] = dx[0];
    dgh[1] = dx[1];
    dgh[2] = dh_n;
    carry = direct;
  }
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A carry) {
    return rec + carry;
  }
};

template <bool kRelu>
struct RnnPolicy {
  static constexpr int kGates = rnn::kGates, kSaved = 0;  // RNN saves nothing but y
  static constexpr bool kForwardCarry = false, kBackwardCarry = false;
  static constexpr bool kSeparateDgh = false;
  static constexpr bool kPrevFromY = true;  // unused

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A /*h_prev*/, A& /*carry*/, A* /*saved*/) {
    return rnn::forward<kRelu, A>(x[0] + hh[0]);
  }
  template <class A>
  FASTRNN_HD static void backward(A dh, A& /*carry*/, const A* /*saved*/, A h, A /*prev*/, A* dx,
                                  A* dgh) {
    dx[0] = dgh[0] = rnn::backward<kRelu, A>(dh, h);
  }
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
};

}  // namespace persistent
}  // namespace fastrnn
