#pragma once
// What the CUDA host glue (*_ops.cpp) shares. It uses only c10's device-generic API for the
// device and stream, so it compiles against a CPU-only torch's headers too.

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <limits>

#include "../common/checks.h"
#include "../common/schedule.h"
#include "launch.h"

// The library and dispatch key the glue registers its ops under. tests/native/cuda_emulation.cpp
// builds the same glue on the host, with host loops for the kernels, as a library of its
// own on the CPU key (FASTRNN_CUDA_EMULATION), so the CPU tests can run it.
#ifndef FASTRNN_CUDA_LIBRARY
#define FASTRNN_CUDA_LIBRARY fastrnn
#define FASTRNN_CUDA_KEY CUDA
#endif

namespace fastrnn {
namespace cuda {

// The caller's current stream on `device` (a CUDA device).
inline cudaStream_t current_stream(const c10::Device& device) {
#ifdef FASTRNN_CUDA_EMULATION
  (void)device;
  return nullptr;
#else
  const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return static_cast<cudaStream_t>(impl.getStream(device).native_handle());
#endif
}

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat;
    case at::kDouble:
      return DType::kDouble;
    case at::kHalf:
      return DType::kHalf;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "fastrnn: CUDA kernels support float32, float64, float16 and bfloat16, "
                  "got ", t.scalar_type());
  }
}

inline void check_launch(cudaError_t error, const char* kernel) {
  TORCH_CHECK(error == cudaSuccess, "fastrnn: CUDA kernel ", kernel, " failed: ",
              cudaGetErrorString(error));
}

// Memory for what the kernels and GEMMs write. The host emulation fills it with NaN, so
// that an element they leave unwritten shows in its tests.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#ifdef FASTRNN_CUDA_EMULATION
  t.fill_(std::numeric_limits<double>::quiet_NaN());
#endif
  return t;
}

// A working copy of t in the kernels' accumulation type: float for half and bfloat16.
inline at::Tensor accumulation_copy(const at::Tensor& t) {
  const bool low = t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
  return t.contiguous().to(low ? at::kFloat : t.scalar_type(), /*non_blocking=*/false,
                           /*copy=*/true);
}

// Rows [first, first + n) of a 2-D tensor (a view).
inline at::Tensor rows(const at::Tensor& t, int64_t first, int64_t n) {
  return t.narrow(0, first, n);
}

// out = a @ w, into a view of a preallocated buffer (cuBLAS on the current stream).
inline void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& w) {
  at::mm_out(out, a, w);
}

// The recurrent weight's gradient grad^T @ h_prev: for a dense sequence from views of y
// and h0, else from h_prev ([N, P]) gathered by the backward kernels.
inline at::Tensor recurrent_weight_grad(const at::Tensor& grad, const at::Tensor& y,
                                        const at::Tensor& h0, const at::Tensor& h_prev,
                                        bool reverse) {
  return h_prev.defined() ? at::mm(grad.t(), h_prev)
                          : recurrent_weight_grad_dense(grad, y, h0, reverse);
}

}  // namespace cuda
}  // namespace fastrnn
