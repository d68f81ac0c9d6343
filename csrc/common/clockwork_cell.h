#pragma once
// The cell the clockwork RNN runs (common/clockwork.h, the CPU and CUDA clockwork walks):
// the tanh Elman cell. A header of its own, without ATen, for the kernels' sources.

#include "../cells/rnn.h"

namespace fastrnn {

using ClockworkCell = rnn::Policy<false>;

}  // namespace fastrnn
