#pragma once
// LSTM cell math for one hidden unit; gate order i, f, g, o as in torch.nn.LSTM.
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f * c_prev + i * g              h = o * tanh(c)
// where a_* = (x W_ih^T + b_ih + b_hh + h_prev W_hh^T)_* are the pre-activations.

#include "../common/activations.h"

namespace fastrnn {
namespace lstm {

constexpr int kGates = 4;
// Per row, forward saves [i | f | g | o | c], each H wide, for the backward pass.
constexpr int kSaved = 5;

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

}  // namespace lstm
}  // namespace fastrnn
