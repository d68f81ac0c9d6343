#pragma once
// The leaky-integrator tanh unit of an echo state network's reservoir (Jaeger, 2001), for
// one hidden unit: h = (1 - a) h_prev + a tanh(x W_in^T + b + h_prev W^T), with a the
// unit's leak rate in (0, 1]. A reservoir is never trained, so the cell is forward only.

#include "../common/activations.h"
#include "policy.h"

namespace fastrnn {
namespace leaky {

constexpr int kGates = 1;
constexpr int kSaved = 0;
constexpr int kParamLeak = 0;  // the leak rate, unit_params[j]

template <typename T>
FASTRNN_HD T forward(T a, T h_prev, T leak) {
  return (T(1) - leak) * h_prev + leak * tanh_act(a);
}

// The leaky tanh as the walks see it (csrc/cells/policy.h): one gate, nothing saved, no
// carry; forward reads h_prev and the unit's leak rate (unit_params: [H]).
struct Policy {
  static constexpr CellKind kKind = CellKind::kLeakyTanh;
  static constexpr int kGates = leaky::kGates, kSaved = leaky::kSaved;
  static constexpr bool kCellState = false;
  static constexpr bool kBackwardCarry = false;
  static constexpr bool kRecurrentBias = false;  // the bias is folded into gx
  static constexpr bool kSeparateDgh = false;
  static constexpr bool kProjection = false;
  static constexpr PrevSource kPrev = PrevSource::kNone;
  static constexpr int kPrevSlot = -1;
  static constexpr int kUnitParams = 1;
  static constexpr bool kForwardOnly = true;
  static constexpr bool kRowWise = false;  // per unit: forward, backward

  template <class A>
  FASTRNN_HD static A forward(const A* x, const A* hh, A h_prev, A& /*carry*/, A* /*saved*/,
                              const A* params) {
    return leaky::forward<A>(x[0] + hh[0], h_prev, params[kParamLeak]);
  }
};

}  // namespace leaky
}  // namespace fastrnn
