#pragma once
// GRU cell math for one hidden unit; gate order r, z, n as in torch.nn.GRU.
//   r = sigmoid(x_r + h_r)  z = sigmoid(x_z + h_z)  n = tanh(x_n + r * h_n)
//   h = (1 - z) * n + z * h_prev
// where x_* = (x W_ih^T + b_ih)_* and h_* = (h_prev W_hh^T + b_hh)_*: b_hn sits inside r * (.).

#include "../common/activations.h"

namespace fastrnn {
namespace gru {

constexpr int kGates = 3;
// Per row, forward saves [r | z | n | h_n], each H wide, for the backward pass.
constexpr int kSaved = 4;

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

}  // namespace gru
}  // namespace fastrnn
