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

// Threads of a row-wise cell's block, one block per row (a multiple of the warp size).
constexpr int kRowThreads = 256;

// cells/row.h's row context for a block that does one row: unit j is thread j % blockDim.x's;
// sum_units adds each thread's partial sum across the block (shuffles, then the warps' sums
// in a fixed order: the same result on every run).
struct BlockRow : ThreadRow {
  template <class F>
  __device__ __forceinline__ void for_units(int64_t H, const F& f) const {
    for (int j = threadIdx.x; j < H; j += blockDim.x) f(j);
  }
  template <class A, class F>
  __device__ __forceinline__ A sum_units(int64_t H, const F& f) const {
    __shared__ A warp_sums[kRowThreads / 32];
    A v = A(0);
    for (int j = threadIdx.x; j < H; j += blockDim.x) v += f(j);
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    __syncthreads();
    A total = A(0);
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += warp_sums[w];
    __syncthreads();  // warp_sums is free again for the next sum
    return total;
  }
};

// One block per row of the step (gridDim.x = rows: up to 2^31 - 1). A minimum of one block
// per SM in its launch bounds: without it ptxas held some double and 16-bit instances to
// 40-64 registers and spilled 8-64 B; with it they use at most 96 and spill nothing.
template <class Unit>
__global__ void __launch_bounds__(kRowThreads, 1) row_kernel(const typename Unit::Args a) {
  Unit::run_row(BlockRow{}, a, blockIdx.x);
}

// Unit's kernel: a thread per (row, column) of the step, or for a row-wise cell a block
// per row.
template <class Cell, class Unit>
cudaError_t launch_unit(const typename Unit::Args& a, cudaStream_t stream) {
  if constexpr (Cell::kRowWise) {
    if (a.step.rows <= 0) return cudaSuccess;
    row_kernel<Unit><<<static_cast<unsigned>(a.step.rows), kRowThreads, 0, stream>>>(a);
    return cudaGetLastError();
  } else {
    return launch<Unit>(a, stream);
  }
}

}  // namespace

template <class Cell>
cudaError_t launch_forward_step(DType dtype, const ForwardStepArgs& a, cudaStream_t stream) {
  return dispatch_forward_step<Cell>(dtype, a, cudaErrorInvalidValue, [&](auto unit) {
    return launch_unit<Cell, decltype(unit)>(a, stream);
  });
}

template <class Cell>
cudaError_t launch_backward_step(DType dtype, const BackwardStepArgs& a, cudaStream_t stream) {
  return dispatch_backward_step<Cell>(dtype, a, cudaErrorInvalidValue, [&](auto unit) {
    return launch_unit<Cell, decltype(unit)>(a, stream);
  });
}

#define FASTRNN_STEP_LAUNCHERS(Cell, NAME)                                                 \
  template cudaError_t launch_forward_step<Cell>(DType, const ForwardStepArgs&, cudaStream_t); \
  template cudaError_t launch_backward_step<Cell>(DType, const BackwardStepArgs&, cudaStream_t);
FASTRNN_FOR_EACH_CELL(FASTRNN_STEP_LAUNCHERS)
FASTRNN_FOR_EACH_ROW_CELL(FASTRNN_STEP_LAUNCHERS)
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
