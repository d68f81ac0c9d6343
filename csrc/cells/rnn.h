#pragma once
// Elman RNN cell math for one hidden unit: h = act(x W_ih^T + b_ih + h_prev W_hh^T + b_hh),
// act = tanh or relu.

#include "../common/activations.h"
#include "policy.h"

namespace fastrnn {
namespace rnn {

constexpr int kGates = 1;
// Forward saves nothing per row besides y (backward reads the activation's output h).
constexpr int kSaved = 0;

template <bool kRelu, typename T>
FASTRNN_HD T forward(T a) {
  if constexpr (kRelu) {
    return relu(a);
  } else {
    return tanh_act(a);
  }
}

// Gradient w.r.t. the pre-activation, from dh and the output h.
template <bool kRelu, typename T>
FASTRNN_HD T backward(T dh, T h) {
  if constexpr (kRelu) {
    return dh * drelu_from_output(h);
  } else {
    return dh * dtanh_from_output(h);
  }
}

// The Elman RNN as the walks see it (csrc/cells/policy.h): no carry, no saved slots;
// backward reads the row's output h.
template <bool kRelu>
struct Policy {
  static constexpr CellKind kKind = kRelu ? CellKind::kRnnRelu : CellKind::kRnnTanh;
  static constexpr int kGates = rnn::kGates, kSaved = rnn::kSaved;
  static constexpr bool kCellState = false;
  static constexpr bool kBackwardCarry = false;  // backward keeps nothing across steps
  static constexpr bool kRecurrentBias = false;  // b_hh is folded into gx
  static constexpr bool kSeparateDgh = false;
  static constexpr bool kProjection = false;
  static constexpr PrevSource kPrev = PrevSource::kNone;
  static constexpr int kPrevSlot = -1;
  static constexpr int kUnitParams = 0;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = false;  // per unit: forward, backward

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A /*h_prev*/, A& /*carry*/,
                              A* /*saved*/, const A* /*params*/) {
    return rnn::forward<kRelu, A>(x[0] + hh[0]);
  }
  template <class A>
  FASTRNN_HD static void backward(A dh, A& /*carry*/, const A* /*saved*/, A h, A /*prev*/,
                                  const A* /*params*/, A* dx, A* dgh) {
    dx[0] = dgh[0] = rnn::backward<kRelu, A>(dh, h);
  }
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
};

}  // namespace rnn
}  // namespace fastrnn
