// The CUDA backend of every op (csrc/ops.h): for each cell, the persistent kernel when the
// selection rule picks it (persistent/ops_bridge.h), else the per-step walk (step_walk.h)
// on CudaDevice: the kernels of step_kernels.cu on the caller's current stream and memory
// from the caching allocator. Everything runs on the current stream, without host syncs.
// Only c10's device-generic API is used for the device and the stream, so this compiles
// against a CPU-only torch's headers too. See docs/architecture.md.

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../cell_ops.h"
#include "persistent/ops_bridge.h"
#include "step_kernels.h"
#include "step_walk.h"
#include "stream.h"

namespace fastrnn {
namespace cuda {
namespace {

// The per-step walk's Device (see step_walk.h) for a CUDA tensor.
class CudaDevice {
 public:
  explicit CudaDevice(const at::Tensor& like) : stream_(current_stream(like.device())) {}

  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
  template <class Cell>
  void forward_step(DType dtype, const ForwardStepArgs& args) const {
    check_launch(launch_forward_step<Cell>(dtype, args, stream_), "forward step");
  }
  template <class Cell>
  void backward_step(DType dtype, const BackwardStepArgs& args) const {
    check_launch(launch_backward_step<Cell>(dtype, args, stream_), "backward step");
  }

 private:
  cudaStream_t stream_;
};

struct CudaBackend {
  // A bfloat16 w_hh with a float state (common/checks.h) is read converted to float.
  static constexpr bool kBfloat16Products = false;
  // The input product (ForwardArgs::x): formed by the op's entry, as gx.
  static constexpr bool kFoldsInputProduct = false;

  // The scope of a single step's backward (cell_ops.h): nothing to set on the device.
  struct StepProducts {
    explicit StepProducts(int64_t) {}
  };

  // The input product of a single step, x @ w_ih^T + b1 + b2 (cell_ops.h): cuBLAS through
  // ATen.
  static at::Tensor input_product(const at::Tensor& x, const at::Tensor& w_ih,
                                  const at::Tensor& b1, const at::Tensor& b2) {
    if (!b1.defined()) return at::mm(x, w_ih.t());
    return at::addmm(b2.defined() ? b1 + b2 : b1, x, w_ih.t());
  }

  // The input's gradient of a single step, grad_gx @ w_ih (cell_ops.h).
  static at::Tensor input_grad(const at::Tensor& grad_gx, const at::Tensor& w_ih) {
    return at::mm(grad_gx, w_ih);
  }

  // w_ih's gradient of a single step, a @ b (cell_ops.h).
  static at::Tensor weight_grad_product(const at::Tensor& a, const at::Tensor& b) {
    return at::mm(a, b);
  }

  template <class Cell>
  static ForwardResult forward(const ForwardArgs& args) {
    const c10::DeviceGuard guard(args.h0.device());
    if constexpr (persistent::kPersistentCell<Cell>) {
      if (auto result = persistent_forward<Cell>(args)) return *result;
    }
    return walk_forward<CudaDevice, Cell>(args);
  }
  template <class Cell>
  static BackwardResult backward(const BackwardArgs& args) {
    const c10::DeviceGuard guard(args.h0.device());
    if (!args.grad_y.defined()) {  // a cell call's (cell_ops.h): the walks read zeros
      BackwardArgs with_zeros = args;
      with_zeros.grad_y = at::zeros_like(args.grad_hn);
      return backward<Cell>(with_zeros);
    }
    if constexpr (persistent::kPersistentCell<Cell>) {
      if (auto result = persistent_backward<Cell>(args)) return *result;
    }
    return walk_backward<CudaDevice, Cell>(args);
  }
};

}  // namespace
}  // namespace cuda
}  // namespace fastrnn

TORCH_LIBRARY_IMPL(fastrnn, CUDA, m) {
  fastrnn::register_ops<fastrnn::cuda::CudaBackend>(m);
  fastrnn::register_cell_ops<fastrnn::cuda::CudaBackend>(m);
}
