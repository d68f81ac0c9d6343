#pragma once
// LSTM cell math for one hidden unit; gate order i, f, g, o as in torch.nn.LSTM.
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f * c_prev + i * g              h = o * tanh(c)
// where a_* = (x W_ih^T + b_ih + b_hh + h_prev W_hh^T)_* are the pre-activations.

#include "../common/activations.h"
#include "policy.h"

namespace fastrnn {
namespace lstm {

constexpr int kGates = 4;
// Per row, forward saves [i | f | g | o | c], each H wide, for the backward pass: slot k
// is columns [k*H, (k+1)*H) of the row.
enum Slot : int { kSlotI, kSlotF, kSlotG, kSlotO, kSlotC, kSaved };

template <typename T>
FASTRNN_HD void forward(T a_i, T a_f, T a_g, T a_o, T c_prev, T& i, T& f, T& g, T& o, T& c,
                        T& h) {
  i = sigmoid(a_i);
  f = sigmoid(a_f);
  g = tanh_act(a_g);
  o = sigmoid(a_o);
  c = f * c_prev + i * g;
  h = o * tanh_act(c);
}

// The cell output before any projection, recomputed from what forward saved.
template <typename T>
FASTRNN_HD T hidden(T o, T c) {
  return o * tanh_act(c);
}

// dh: gradient w.r.t. this step's h (before projection); dc: w.r.t. this step's c,
// replaced by the gradient w.r.t. c_prev. Writes the pre-activation gradients.
template <typename T>
FASTRNN_HD void backward(T dh, T& dc, T i, T f, T g, T o, T c, T c_prev, T& da_i, T& da_f,
                         T& da_g, T& da_o) {
  const T tanh_c = tanh_act(c);
  const T dc_total = dc + dh * o * dtanh_from_output(tanh_c);
  da_o = dh * tanh_c * dsigmoid_from_output(o);
  da_i = dc_total * g * dsigmoid_from_output(i);
  da_f = dc_total * c_prev * dsigmoid_from_output(f);
  da_g = dc_total * i * dtanh_from_output(g);
  dc = dc_total * f;
}

// The LSTM as the walks see it (csrc/cells/policy.h). carry: c forward, dc backward; c0 and
// cn are the carry's initial and final values. prev: c_prev.
struct Policy {
  static constexpr CellKind kKind = CellKind::kLstm;
  static constexpr int kGates = lstm::kGates, kSaved = lstm::kSaved;
  static constexpr bool kCellState = true;       // a second state c: c0, cn, grad_c0
  static constexpr bool kBackwardCarry = true;  // backward keeps dc across steps
  static constexpr bool kRecurrentBias = false;  // b_hh is folded into gx
  static constexpr bool kSeparateDgh = false;    // the gradient w.r.t. hh is dx
  static constexpr bool kProjection = true;      // h may be projected (w_hr, proj_size)
  static constexpr PrevSource kPrev = PrevSource::kSavedSlot;
  static constexpr int kPrevSlot = kSlotC;
  static constexpr int kUnitParams = 0;
  static constexpr bool kForwardOnly = false;

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A /*h_prev*/, A& carry, A* saved,
                              const A* /*params*/) {
    A c_new, h;
    lstm::forward<A>(x[0] + hh[0], x[1] + hh[1], x[2] + hh[2], x[3] + hh[3], carry,
                     saved[kSlotI], saved[kSlotF], saved[kSlotG], saved[kSlotO], c_new, h);
    saved[kSlotC] = c_new;
    carry = c_new;
    return h;
  }
  template <class A>
  FASTRNN_HD static void backward(A dh, A& carry, const A* saved, A /*h*/, A prev, A* dx,
                                  A* dgh) {
    lstm::backward<A>(dh, carry, saved[kSlotI], saved[kSlotF], saved[kSlotG], saved[kSlotO],
                      saved[kSlotC], prev, dx[0], dx[1], dx[2], dx[3]);
    for (int g = 0; g < kGates; ++g) dgh[g] = dx[g];
  }
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
  // The cell output before projection, from a row's saved slots (for grad_w_hr).
  template <class A>
  FASTRNN_HD static A hidden_from_saved(const A* saved) {
    return lstm::hidden<A>(saved[kSlotO], saved[kSlotC]);
  }
};

}  // namespace lstm
}  // namespace fastrnn
