// The CUDA backend's per-step walk without a GPU: csrc/cuda/step_walk.h instantiated with
// an emulated device whose kernel launch runs the very (row, column) units of
// csrc/cuda/step_units.h in host loops and whose memory starts as NaN, so that an element
// the kernels and GEMMs leave unwritten shows. Registered as the CPU kernels of a library
// of its own, fastrnn_cuda_emulated, with fastrnn's schemas and entry points (csrc/ops.h);
// tests/test_cuda_emulation.py builds it and checks it against the CPU ops. What it cannot
// check: the persistent path (tests/native/persistent_emulation.cpp runs its blocks), the
// launch geometry, streams, cuBLAS and the device code generation (scripts/check_cuda.py
// compiles that).

#include <torch/library.h>

#include <limits>

#include "../../csrc/ops.h"
#include "../../csrc/cuda/step_units.h"
#include "../../csrc/cuda/step_walk.h"

namespace fastrnn {
namespace cuda {
namespace {

// Unit::run(args, row, j) over the step's rows and columns [0, Unit::width(args)): what
// the kernel's threads do.
template <class Unit>
bool run_on_host(const typename Unit::Args& args) {
  for (int64_t row = 0; row < args.step.rows; ++row) {
    for (int64_t j = 0; j < Unit::width(args); ++j) Unit::run(args, row, j);
  }
  return true;
}

struct EmulatedDevice {
  explicit EmulatedDevice(const at::Tensor&) {}

  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options).fill_(std::numeric_limits<double>::quiet_NaN());
  }
  template <class Cell>
  void forward_step(DType dtype, const ForwardStepArgs& args) const {
    const bool ran = dispatch_forward_step<Cell>(
        dtype, args, false, [&](auto unit) { return run_on_host<decltype(unit)>(args); });
    TORCH_CHECK(ran, "no emulated forward step for this dtype");
  }
  template <class Cell>
  void backward_step(DType dtype, const BackwardStepArgs& args) const {
    const bool ran = dispatch_backward_step<Cell>(
        dtype, args, false, [&](auto unit) { return run_on_host<decltype(unit)>(args); });
    TORCH_CHECK(ran, "no emulated backward step for this dtype");
  }
};

struct EmulatedBackend {
  static constexpr bool kBfloat16Products = false;  // as CudaBackend
  static constexpr bool kFoldsInputProduct = false;  // as CudaBackend
  template <class Cell>
  static ForwardResult forward(const ForwardArgs& args) {
    return walk_forward<EmulatedDevice, Cell>(args);
  }
  template <class Cell>
  static BackwardResult backward(const BackwardArgs& args) {
    return walk_backward<EmulatedDevice, Cell>(args);
  }
};

}  // namespace
}  // namespace cuda
}  // namespace fastrnn

TORCH_LIBRARY(fastrnn_cuda_emulated, m) { fastrnn::define_ops(m); }

TORCH_LIBRARY_IMPL(fastrnn_cuda_emulated, CPU, m) {
  fastrnn::register_ops<fastrnn::cuda::EmulatedBackend>(m);
}
