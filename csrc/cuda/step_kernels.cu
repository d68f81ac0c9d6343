// The per-step kernels: one step's fused gate math and state update (forward) or its
// gradient (backward), for every cell, dtype and option, and their launchers
// (step_kernels.h). The GEMMs around them run through ATen in the walk (step_walk.h).
// Thread (row, j) does column j of the step's row `row` (step_units.h); no two threads
// write the same element: no atomics, bitwise reproducible results.

#include "../cells/all.h"
#include "../common/clockwork_cell.h"
#include "launch_geometry.cuh"
#include "step_kernels.h"
#include "step_units.h"

namespace fastrnn {
namespace cuda {
namespace {

// Shapes and aliasing: ForwardStepArgs / BackwardStepArgs in step_args.h (Unit::Args);
// one thread per (row, column j < Unit::width(a)) of the step.
template <class Unit>
__global__ void __launch_bounds__(kStepThreads) step_kernel(const typename Unit::Args a) {
  const int64_t j = step_column();
  if (j >= Unit::width(a)) return;
  for (int64_t row = blockIdx.y; row < a.step.rows; row += gridDim.y) Unit::run(a, row, j);
}

template <class Unit>
cudaError_t launch(const typename Unit::Args& a, cudaStream_t stream) {
  const int64_t width = Unit::width(a);
  if (empty_launch(a.step.rows, width)) return cudaSuccess;
  step_kernel<Unit><<<step_grid(a.step.rows, width), kStepThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class Cell>
cudaError_t launch_forward_step(DType dtype, const ForwardStepArgs& a, cudaStream_t stream) {
  return dispatch_forward_step<Cell>(dtype, a, cudaErrorInvalidValue, [&](auto unit) {
    return launch<decltype(unit)>(a, stream);
  });
}

template <class Cell>
cudaError_t launch_backward_step(DType dtype, const BackwardStepArgs& a, cudaStream_t stream) {
  return dispatch_backward_step<Cell>(dtype, a, cudaErrorInvalidValue, [&](auto unit) {
    return launch<decltype(unit)>(a, stream);
  });
}

#define FASTRNN_STEP_LAUNCHERS(Cell, NAME)                                                 \
  template cudaError_t launch_forward_step<Cell>(DType, const ForwardStepArgs&, cudaStream_t); \
  template cudaError_t launch_backward_step<Cell>(DType, const BackwardStepArgs&, cudaStream_t);
FASTRNN_FOR_EACH_CELL(FASTRNN_STEP_LAUNCHERS)
#undef FASTRNN_STEP_LAUNCHERS
// The forward-only leaky cell of a reservoir (not in the list: it has no backward).
template cudaError_t launch_forward_step<leaky::Policy>(DType, const ForwardStepArgs&,
                                                        cudaStream_t);

cudaError_t launch_clockwork_forward_step(DType dtype, const ClockworkStepArgs& a,
                                          cudaStream_t stream) {
  return dispatch(StepTypes{}, dtype, cudaErrorInvalidValue, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return launch<ClockworkForwardUnit<ClockworkCell, T>>(a, stream);
  });
}

cudaError_t launch_clockwork_backward_step(DType dtype, const ClockworkStepArgs& a,
                                           cudaStream_t stream) {
  return dispatch(StepTypes{}, dtype, cudaErrorInvalidValue, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return launch<ClockworkBackwardUnit<ClockworkCell, T>>(a, stream);
  });
}

}  // namespace cuda
}  // namespace fastrnn
