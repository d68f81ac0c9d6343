#pragma once
// GRU cell math for one hidden unit; gate order r, z, n as in torch.nn.GRU.
//   r = sigmoid(x_r + h_r)  z = sigmoid(x_z + h_z)  n = tanh(x_n + r * h_n)
//   h = (1 - z) * n + z * h_prev
// where x_* = (x W_ih^T + b_ih)_* and h_* = (h_prev W_hh^T + b_hh)_*: b_hn sits inside r * (.).

#include "../common/activations.h"
#include "policy.h"

namespace fastrnn {
namespace gru {

constexpr int kGates = 3;
// Per row, forward saves [r | z | n | h_n], each H wide, for the backward pass: slot k is
// columns [k*H, (k+1)*H) of the row. h_n = (h_prev W_hn^T + b_hn), needed for dr.
enum Slot : int { kSlotR, kSlotZ, kSlotN, kSlotHn, kSaved };

template <typename T>
FASTRNN_HD void forward(T x_r, T x_z, T x_n, T h_r, T h_z, T h_n, T h_prev, T& r, T& z, T& n,
                        T& h) {
  r = sigmoid(x_r + h_r);
  z = sigmoid(x_z + h_z);
  n = tanh_act(x_n + r * h_n);
  h = (T(1) - z) * n + z * h_prev;
}

// dh: gradient w.r.t. this step's h. Writes the gradients w.r.t. the input-side
// pre-activations (dx_*), the recurrent-side ones (dh_*: dh_r = dx_r, dh_z = dx_z,
// dh_n = dx_n * r) and the direct part of the gradient w.r.t. h_prev.
template <typename T>
FASTRNN_HD void backward(T dh, T r, T z, T n, T h_n, T h_prev, T& dx_r, T& dx_z, T& dx_n,
                         T& dh_n, T& dh_prev_direct) {
  dx_n = dh * (T(1) - z) * dtanh_from_output(n);
  dx_z = dh * (h_prev - n) * dsigmoid_from_output(z);
  dx_r = dx_n * h_n * dsigmoid_from_output(r);
  dh_n = dx_n * r;
  dh_prev_direct = dh * z;
}

// The GRU as the walks see it (csrc/cells/policy.h). hh includes b_hh, which must stay on
// the recurrent side (inside r * (.)). carry: none forward; backward, the direct part
// dh * z of the gradient w.r.t. h_prev. prev: h_prev.
struct Policy {
  static constexpr CellKind kKind = CellKind::kGru;
  static constexpr int kGates = gru::kGates, kSaved = gru::kSaved;
  static constexpr bool kCellState = false;
  static constexpr bool kBackwardCarry = true;  // backward keeps the direct part of dh_prev
  static constexpr bool kRecurrentBias = true;
  static constexpr bool kSeparateDgh = true;  // dh_n = dx_n * r differs from dx_n
  static constexpr bool kProjection = false;
  static constexpr PrevSource kPrev = PrevSource::kOutput;
  static constexpr int kPrevSlot = -1;
  static constexpr int kUnitParams = 0;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = false;  // per unit: forward, backward

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A h_prev, A& /*carry*/, A* saved,
                              const A* /*params*/) {
    A h;
    gru::forward<A>(x[0], x[1], x[2], hh[0], hh[1], hh[2], h_prev, saved[kSlotR],
                    saved[kSlotZ], saved[kSlotN], h);
    saved[kSlotHn] = hh[2];
    return h;
  }
  template <class A>
  FASTRNN_HD static void backward(A dh, A& carry, const A* saved, A /*h*/, A prev,
                                  const A* /*params*/, A* dx, A* dgh) {
    A dh_n, direct;
    gru::backward<A>(dh + carry, saved[kSlotR], saved[kSlotZ], saved[kSlotN], saved[kSlotHn],
                     prev, dx[0], dx[1], dx[2], dh_n, direct);
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

}  // namespace gru
}  // namespace fastrnn
