#pragma once
// One step of the walk over packed time, as plain numbers that host code and CUDA kernels
// share (see Schedule in schedule.h, which makes them).

#include <cstdint>

#include "macros.h"

namespace fastrnn {

// The step's rows are packed rows [first, first + rows). Its rows i < carried were rows of
// the step before (packed rows prev_first + i), whose state they continue; rows
// i >= carried start from the initial state (row i of h0/c0).
struct Step {
  int64_t rows, first, carried, prev_first;
};

// The packed row holding the previous state of row i of `step`, or -1 when that is row i
// of the initial state.
FASTRNN_HD int64_t previous_packed_row(const Step& step, int64_t i) {
  return i < step.carried ? step.prev_first + i : -1;
}

}  // namespace fastrnn
