#pragma once
// The per-step kernels' launchers (step_kernels.cu, which includes only the CUDA runtime
// and this project's headers): one step's fused kernel for Cell in dtype on `stream`, raw
// pointers in (step_args.h), the launch's error (cudaGetLastError) out. Instantiated for
// every cell of csrc/cells/all.h.

#include <cuda_runtime_api.h>

#include "../common/dtype.h"
#include "clockwork_units.h"
#include "step_args.h"

namespace fastrnn {
namespace cuda {

template <class Cell>
cudaError_t launch_forward_step(DType dtype, const ForwardStepArgs& args, cudaStream_t stream);
template <class Cell>
cudaError_t launch_backward_step(DType dtype, const BackwardStepArgs& args, cudaStream_t stream);

// The clockwork RNN's step (clockwork_units.h), for its cell.
cudaError_t launch_clockwork_forward_step(DType dtype, const ClockworkStepArgs& args,
                                          cudaStream_t stream);
cudaError_t launch_clockwork_backward_step(DType dtype, const ClockworkStepArgs& args,
                                           cudaStream_t stream);

}  // namespace cuda
}  // namespace fastrnn
