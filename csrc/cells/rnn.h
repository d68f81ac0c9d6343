#pragma once
// Elman RNN cell math for one hidden unit: h = act(x W_ih^T + b_ih + h_prev W_hh^T + b_hh),
// act = tanh or relu.

#include "../common/activations.h"

namespace fastrnn {
namespace rnn {

constexpr int kGates = 1;

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

}  // namespace rnn
}  // namespace fastrnn
