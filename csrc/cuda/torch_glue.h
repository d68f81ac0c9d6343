#pragma once
// What the CUDA backend's host code (the per-step walk, the persistent bridge) shares on
// the ATen side: the one mapping of at::ScalarType onto DType, accumulation copies, row
// views, GEMMs into preallocated rows and the recurrent weight's gradient. No CUDA runtime
// (that is stream.h), so that the walk's host emulation builds it on the CPU too.

#include <ATen/ATen.h>

#include <optional>

#include "../common/dtype.h"
#include "../common/schedule.h"

namespace fastrnn {
namespace cuda {

// The DType of a scalar type, if the GPU code has one for it.
inline std::optional<DType> dtype_code(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: return std::nullopt;
  }
}

inline DType dtype_of(const at::Tensor& t) {
  const std::optional<DType> dtype = dtype_code(t.scalar_type());
  TORCH_CHECK(dtype.has_value(), "fastrnn: CUDA kernels support float32, float64, float16 and ",
              "bfloat16, got ", t.scalar_type());
  return *dtype;
}

// The data of t, or null for an undefined tensor.
inline void* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Rows [first, first + n) of a 2-D tensor (a view).
inline at::Tensor rows(const at::Tensor& t, int64_t first, int64_t n) {
  return t.narrow(0, first, n);
}

// out = a @ w, into a view of a preallocated buffer (cuBLAS on the current stream).
inline void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& w) {
  at::mm_out(out, a, w);
}

// The recurrent weight's gradient grad^T @ h_prev: for a dense sequence from views of y
// and h0, else from h_prev ([N, P], each packed row's h_prev, gathered by the caller).
inline at::Tensor recurrent_weight_grad(const at::Tensor& grad, const at::Tensor& y,
                                        const at::Tensor& h0, const at::Tensor& h_prev,
                                        bool reverse) {
  if (h_prev.defined()) return at::mm(grad.t(), h_prev);
  return recurrent_weight_grad_dense(at::empty({grad.size(1), y.size(1)}, grad.options()), grad,
                                     y, h0, reverse);
}

}  // namespace cuda
}  // namespace fastrnn
