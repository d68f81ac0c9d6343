#pragma once
// LSTM cell math for one hidden unit; gate order i, f, g, o as in torch.nn.LSTM.
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f * c_prev + i * g              h = o * tanh(c)
// where a_* = (x W_ih^T + b_ih + b_hh + h_prev W_hh^T)_* are the pre-activations.
//
// Two variants, compile-time switches of one policy (Variant below):
//   peepholes (Gers & Schmidhuber, 2000): a_i += p_i * c_prev, a_f += p_f * c_prev and
//     a_o += p_o * c (the new cell), with p_* learned vectors of H (ONNX's LSTM input P);
//   coupled input and forget gates (CIFG; Greff et al., 2017): no forget-gate block,
//     f = 1 - i, so the gate blocks are i, g, o (ONNX's input_forget = 1); with peepholes
//     only p_i and p_o exist.

#include "../common/activations.h"
#include "policy.h"

namespace fastrnn {
namespace lstm {

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

// The gradients through c = f * c_prev + i * g: dc_total is the gradient w.r.t. c (all of
// it); writes those w.r.t. the i, f and g pre-activations and returns the one w.r.t. c_prev.
template <typename T>
FASTRNN_HD T cell_backward(T dc_total, T i, T f, T g, T c_prev, T& da_i, T& da_f, T& da_g) {
  da_i = dc_total * g * dsigmoid_from_output(i);
  da_f = dc_total * c_prev * dsigmoid_from_output(f);
  da_g = dc_total * i * dtanh_from_output(g);
  return dc_total * f;
}

// dh: gradient w.r.t. this step's h (before projection); dc: w.r.t. this step's c,
// replaced by the gradient w.r.t. c_prev. Writes the pre-activation gradients.
template <typename T>
FASTRNN_HD void backward(T dh, T& dc, T i, T f, T g, T o, T c, T c_prev, T& da_i, T& da_f,
                         T& da_g, T& da_o) {
  const T tanh_c = tanh_act(c);
  const T dc_total = dc + dh * o * dtanh_from_output(tanh_c);
  da_o = dh * tanh_c * dsigmoid_from_output(o);
  dc = cell_backward(dc_total, i, f, g, c_prev, da_i, da_f, da_g);
}

// The LSTM and its variants as the walks see them (csrc/cells/policy.h). carry: c forward,
// dc backward; c0 and cn are the carry's initial and final values. prev: c_prev.
// Gate blocks, saved slots (each H wide, slot k is columns [k*H, (k+1)*H) of a row) and
// unit_params ([K*H]):
//   LSTM              gates i f g o   saved i f g o c   no unit params
//   peepholes         gates i f g o   saved i f g o c   p_i p_f p_o
//   coupled gates     gates i g o     saved i g o c     none
//   both              gates i g o     saved i g o c     p_i p_o
template <bool kPeepholes, bool kCoupled>
struct Variant {
  static constexpr CellKind kKind =
      kPeepholes ? (kCoupled ? CellKind::kPeepholeCoupledLstm : CellKind::kPeepholeLstm)
                 : (kCoupled ? CellKind::kCoupledLstm : CellKind::kLstm);
  // Gate blocks (and saved slots) in order; kF is absent (-1) with coupled gates.
  static constexpr int kI = 0, kF = kCoupled ? -1 : 1, kG = kCoupled ? 1 : 2,
                       kO = kCoupled ? 2 : 3;
  static constexpr int kGates = kCoupled ? 3 : 4;
  static constexpr int kSlotC = kGates, kSaved = kGates + 1;
  static constexpr bool kCellState = true;       // a second state c: c0, cn, grad_c0
  static constexpr bool kBackwardCarry = true;  // backward keeps dc across steps
  static constexpr bool kRecurrentBias = false;  // b_hh is folded into gx
  static constexpr bool kSeparateDgh = false;    // the gradient w.r.t. hh is dx
  static constexpr bool kProjection = true;      // h may be projected (w_hr, proj_size)
  static constexpr PrevSource kPrev = PrevSource::kSavedSlot;
  static constexpr int kPrevSlot = kSlotC;
  static constexpr int kUnitParams = kPeepholes ? (kCoupled ? 2 : 3) : 0;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = false;  // per unit: forward, backward
  // Peephole k adds params[k] * (c_prev, or c when kPeepholeReadsNewC[k]) to gate block
  // kPeepholeGate[k]'s pre-activation (its gradient: common/recurrence.h,
  // unit_params_grad). Only the first kUnitParams entries are read.
  static constexpr int kPeepholeGate[3] = {kI, kCoupled ? kO : kF, kO};
  static constexpr bool kPeepholeReadsNewC[3] = {false, kCoupled, true};
  static constexpr int kParamO = kUnitParams - 1;  // p_o's index, with peepholes

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A /*h_prev*/, A& carry, A* saved,
                              const A* params) {
    if constexpr (!kPeepholes && !kCoupled) {
      A c_new, h;
      lstm::forward<A>(x[0] + hh[0], x[1] + hh[1], x[2] + hh[2], x[3] + hh[3], carry,
                       saved[kI], saved[kF], saved[kG], saved[kO], c_new, h);
      saved[kSlotC] = c_new;
      carry = c_new;
      return h;
    } else {
      const A c_prev = carry;
      A a_i = x[kI] + hh[kI];
      if constexpr (kPeepholes) a_i += params[0] * c_prev;
      const A i = sigmoid(a_i);
      A f;
      if constexpr (kCoupled) {
        f = A(1) - i;
      } else {
        A a_f = x[kF] + hh[kF];
        if constexpr (kPeepholes) a_f += params[1] * c_prev;
        f = sigmoid(a_f);
        saved[kF] = f;
      }
      const A g = tanh_act(x[kG] + hh[kG]);
      const A c = f * c_prev + i * g;
      A a_o = x[kO] + hh[kO];
      if constexpr (kPeepholes) a_o += params[kParamO] * c;
      const A o = sigmoid(a_o);
      saved[kI] = i;
      saved[kG] = g;
      saved[kO] = o;
      saved[kSlotC] = c;
      carry = c;
      return o * tanh_act(c);
    }
  }
  template <class A>
  FASTRNN_HD static void backward(A dh, A& carry, const A* saved, A /*h*/, A prev,
                                  const A* params, A* dx, A* dgh) {
    if constexpr (!kPeepholes && !kCoupled) {
      lstm::backward<A>(dh, carry, saved[kI], saved[kF], saved[kG], saved[kO], saved[kSlotC],
                        prev, dx[kI], dx[kF], dx[kG], dx[kO]);
    } else {
      const A i = saved[kI], g = saved[kG], o = saved[kO], c = saved[kSlotC];
      const A tanh_c = tanh_act(c);
      dx[kO] = dh * tanh_c * dsigmoid_from_output(o);
      A dc_total = carry + dh * o * dtanh_from_output(tanh_c);
      if constexpr (kPeepholes) dc_total += dx[kO] * params[kParamO];
      A dc_prev;
      if constexpr (kCoupled) {  // c = c_prev + i * (g - c_prev)
        dx[kG] = dc_total * i * dtanh_from_output(g);
        dx[kI] = dc_total * (g - prev) * dsigmoid_from_output(i);
        dc_prev = dc_total * (A(1) - i);
      } else {
        dc_prev = lstm::cell_backward<A>(dc_total, i, saved[kF], g, prev, dx[kI], dx[kF],
                                         dx[kG]);
        if constexpr (kPeepholes) dc_prev += dx[kF] * params[1];
      }
      if constexpr (kPeepholes) dc_prev += dx[kI] * params[0];
      carry = dc_prev;
    }
    for (int q = 0; q < kGates; ++q) dgh[q] = dx[q];
  }
  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
  // The cell output before projection, from a row's saved slots (for grad_w_hr).
  template <class A>
  FASTRNN_HD static A hidden_from_saved(const A* saved) {
    return lstm::hidden<A>(saved[kO], saved[kSlotC]);
  }
};

using Policy = Variant<false, false>;  // torch.nn.LSTM's
using PeepholePolicy = Variant<true, false>;
using CoupledPolicy = Variant<false, true>;
using PeepholeCoupledPolicy = Variant<true, true>;

}  // namespace lstm
}  // namespace fastrnn
