#pragma once
// fastrnn::linear on the CPU (linear.cpp): the facts that choose its kernel, and the op itself
// for the walks that form an input product themselves.

#include <ATen/ATen.h>

#include <optional>

namespace fastrnn {

// Whether this CPU is of the kind the choices between fastrnn's kernels and oneDNN's or
// BLAS's were measured on (x86 AMD: an AMD EPYC, Zen 4); on others they keep to what torch
// does (linear.cpp, and the input product of cpu/backend.cpp's fused walks).
bool measured_cpu();

// The least depth from which the CPU's linear takes oneDNN, 0 where it never does
// (linear.cpp; fastrnn._C.LINEAR_MIN_DEPTH).
int64_t linear_onednn_min_depth();

// Whether the CPU's linear takes oneDNN for a bfloat16 product with a bias: on the CPUs where
// it takes oneDNN's float32 product (linear_onednn_min_depth) and oneDNN computes in
// bfloat16 (linear.cpp; fastrnn._C.LINEAR_BFLOAT16_BIAS).
bool linear_onednn_bfloat16();

// The least size in bytes of a result of the CPU's linear that comes from the buffers the
// CPU walks reuse from call to call (walk_state.h; fastrnn._C.LINEAR_POOLED_BYTES).
int64_t linear_pooled_bytes();

// The least size in bytes of a float32 result that the CPU's linear forms in those buffers
// at any depth (linear.cpp; fastrnn._C.LINEAR_FRESH_BYTES): from there at::addmm's or
// oneDNN's own result would be a fresh mapping (walk_state.h).
int64_t linear_fresh_bytes();

namespace cpu {

// input [N, K] @ weight^T + bias: weight [M, K], bias [M] or none -> [N, M].
at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias);

}  // namespace cpu
}  // namespace fastrnn
