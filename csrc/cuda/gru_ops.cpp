// GRU recurrence on CUDA: per step one recurrent GEMM (cuBLAS through ATen; b_hh is added
// by the kernel, inside r * (.)) and one fused kernel (gru.cu); weight gradients as GEMMs
// after the loop. Everything runs on the caller's current stream, without host syncs.

#include <torch/library.h>

#include "glue.h"
#include "persistent_glue.h"

namespace fastrnn {
namespace cuda {
namespace {

using at::Tensor;
using c10::optional;

// gx: [N, 3H] = x @ W_ih^T + b_ih; h0: [B, H]; w_hh: [3H, H]; b_hh: [3H] or none.
// Returns y: [N, H]; hn: [B, H]; saved: [N, 4H] = [r|z|n|h_n] per row when save, read by
// gru_backward, else [0, 4H].
std::tuple<Tensor, Tensor, Tensor> gru_forward(const Tensor& gx_in, const Tensor& batch_sizes,
                                               const Tensor& h0, const Tensor& w_hh,
                                               const optional<Tensor>& b_hh, bool reverse,
                                               bool save) {
  const char* op = "gru_forward";
  const auto sz = check_gru_forward(op, gx_in, batch_sizes, h0, w_hh, b_hh);
  const int64_t H = sz.H;
  const c10::DeviceGuard guard(h0.device());
  const cudaStream_t stream = current_stream(h0.device());
  const Tensor gx = gx_in.contiguous();
  const Tensor bias = b_hh.has_value() ? b_hh->contiguous() : Tensor();
  const Schedule schedule(batch_sizes, reverse);

  // The whole sequence in one persistent launch, when chosen (persistent_glue.h).
  if (persistent_chosen<gru::Policy>(op, gx, sz.B, H, sz.N, false)) {
    Tensor y = empty_output({sz.N, H}, gx.options()), hn = empty_output({sz.B, H}, gx.options());
    Tensor saved = empty_output({save ? sz.N : 0, gru::kSaved * H}, gx.options());
    if (persistent_gru_forward(gx, batch_sizes, h0.contiguous(), w_hh.contiguous(), bias,
                               reverse, y, hn, saved)) {
      return {y, hn, saved};
    }
  }

  Tensor h_state = h0.contiguous().clone();  // [B, H], updated in place by the kernel
  Tensor y = empty_output({sz.N, H}, gx.options());
  Tensor saved = empty_output({save ? sz.N : 0, gru::kSaved * H}, gx.options());
  Tensor gh = empty_output({sz.B, 3 * H}, gx.options());  // h_prev @ w_hh^T
  const Tensor w_hh_t = w_hh.t();

  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    mm_into(rows(gh, 0, b), rows(h_state, 0, b), w_hh_t);
    const GruForwardStep args{gx.data_ptr(), gh.data_ptr(),
                              bias.defined() ? bias.data_ptr() : nullptr, h_state.data_ptr(),
                              y.data_ptr(), save ? saved.data_ptr() : nullptr, H, step};
    check_launch(gru_forward_step(dtype_of(gx), args, stream), "gru_forward_kernel");
  }
  return {y, h_state, saved};
}

// Gradients of gru_forward. grad_y: [N, H]; grad_hn: [B, H]; the rest as passed to and
// returned by gru_forward with save (saved is only read).
// Returns grad_gx: [N, 3H]; grad_h0: [B, H]; grad_w_hh: [3H, H]; grad_b_hh: [3H], or [0]
// without bias.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_y_in, const Tensor& grad_hn, const Tensor& batch_sizes,
    const Tensor& h0_in, const Tensor& w_hh, const Tensor& y_in, const Tensor& saved_in,
    bool has_bias, bool reverse) {
  const char* op = "gru_backward";
  const auto sz = check_gru_backward(op, grad_y_in, grad_hn, batch_sizes, h0_in, w_hh, y_in,
                      saved_in);
  const int64_t H = sz.H;
  const c10::DeviceGuard guard(h0_in.device());
  const cudaStream_t stream = current_stream(h0_in.device());
  const Tensor grad_y = grad_y_in.contiguous(), saved = saved_in.contiguous();
  const Tensor y = y_in.contiguous(), h0 = h0_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  const auto options = saved.options();

  // The whole sequence in one persistent launch, when chosen (persistent_glue.h); the
  // weight and bias gradients as below.
  if (persistent_chosen<gru::Policy>(op, saved, sz.B, H, sz.N, true)) {
    Tensor grad_gx = empty_output({sz.N, 3 * H}, options);
    Tensor grad_gh = empty_output({sz.N, 3 * H}, options);
    Tensor grad_h0 = empty_output({sz.B, H}, options);
    if (persistent_gru_backward(grad_y, grad_hn.contiguous(), batch_sizes, h0, w_hh.contiguous(),
                                y, saved, reverse, grad_gx, grad_gh, grad_h0)) {
      Tensor grad_w_hh = recurrent_weight_grad(grad_gh, y, h0, persistent_h_prev(y, h0, schedule),
                                               reverse);
      Tensor grad_b_hh = has_bias ? grad_gh.sum(0) : at::empty({0}, options);
      return {grad_gx, grad_h0, grad_w_hh, grad_b_hh};
    }
  }

  // The gradient w.r.t. the h state is dh_state + dh_direct ([B, H] each): the parts
  // through w_hh and through z * h_prev.
  Tensor dh_state = grad_hn.contiguous().clone();
  Tensor dh_direct = at::zeros_like(dh_state);
  Tensor grad_gx = empty_output({sz.N, 3 * H}, options);
  Tensor grad_gh = empty_output({sz.N, 3 * H}, options);  // w.r.t. h_prev @ w_hh^T + b_hh
  // A packed sequence's h_prev rows, gathered by the kernels for grad_w_hh.
  Tensor h_prev = schedule.dense() ? Tensor() : empty_output({sz.N, H}, options);

  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    const GruBackwardStep args{dh_state.data_ptr(), dh_direct.data_ptr(), grad_y.data_ptr(),
                               saved.data_ptr(),    y.data_ptr(),         h0.data_ptr(),
                               grad_gx.data_ptr(),  grad_gh.data_ptr(),
                               h_prev.defined() ? h_prev.data_ptr() : nullptr, H, step};
    check_launch(gru_backward_step(dtype_of(saved), args, stream), "gru_backward_kernel");
    mm_into(rows(dh_state, 0, b), rows(grad_gh, step.first, b), w_hh);
  }

  Tensor grad_w_hh = recurrent_weight_grad(grad_gh, y, h0, h_prev, reverse);
  Tensor grad_b_hh = has_bias ? grad_gh.sum(0) : at::empty({0}, options);
  return {grad_gx, dh_state.add_(dh_direct), grad_w_hh, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTRNN_CUDA_LIBRARY, FASTRNN_CUDA_KEY, m) {
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace cuda
}  // namespace fastrnn
