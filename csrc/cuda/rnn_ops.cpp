// Elman RNN (tanh or relu) recurrence on CUDA: per step one recurrent GEMM (cuBLAS through
// ATen) and one fused kernel (rnn.cu); the weight gradient as one GEMM after the loop.
// Everything runs on the caller's current stream, without host syncs.

#include <torch/library.h>

#include "glue.h"
#include "persistent_glue.h"

namespace fastrnn {
namespace cuda {
namespace {

using at::Tensor;

// gx: [N, H] = x @ W_ih^T + b_ih + b_hh; h0: [B, H]; w_hh: [H, H].
// Returns y: [N, H] (also read by rnn_backward); hn: [B, H].
std::tuple<Tensor, Tensor> rnn_forward(const Tensor& gx_in, const Tensor& batch_sizes,
                                       const Tensor& h0, const Tensor& w_hh, bool relu,
                                       bool reverse) {
  const char* op = "rnn_forward";
  const auto sz = check_rnn_forward(op, gx_in, batch_sizes, h0, w_hh);
  const c10::DeviceGuard guard(h0.device());
  const cudaStream_t stream = current_stream(h0.device());
  const Tensor gx = gx_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  // The whole sequence in one persistent launch, when chosen (persistent_glue.h).
  if (relu ? persistent_chosen<rnn::Policy<true>>(op, gx, sz.B, sz.H, sz.N, false)
           : persistent_chosen<rnn::Policy<false>>(op, gx, sz.B, sz.H, sz.N, false)) {
    Tensor y = empty_output({sz.N, sz.H}, gx.options());
    Tensor hn = empty_output({sz.B, sz.H}, gx.options());
    if (persistent_rnn_forward(gx, batch_sizes, h0.contiguous(), w_hh.contiguous(), relu, reverse,
                               y, hn)) {
      return {y, hn};
    }
  }
  Tensor h_state = h0.contiguous().clone();  // [B, H], rows overwritten by the kernel
  Tensor y = empty_output({sz.N, sz.H}, gx.options());
  Tensor gh = empty_output({sz.B, sz.H}, gx.options());  // h_prev @ w_hh^T
  const Tensor w_hh_t = w_hh.t();

  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    mm_into(rows(gh, 0, b), rows(h_state, 0, b), w_hh_t);
    const RnnForwardStep args{gx.data_ptr(), gh.data_ptr(), h_state.data_ptr(), y.data_ptr(),
                              sz.H, relu, step};
    check_launch(rnn_forward_step(dtype_of(gx), args, stream), "rnn_forward_kernel");
  }
  return {y, h_state};
}

// Gradients of rnn_forward. grad_y: [N, H]; grad_hn: [B, H]; y as returned by rnn_forward.
// Returns grad_gx: [N, H]; grad_h0: [B, H]; grad_w_hh: [H, H].
std::tuple<Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_y_in, const Tensor& grad_hn,
                                                const Tensor& batch_sizes, const Tensor& h0_in,
                                                const Tensor& w_hh, const Tensor& y_in,
                                                bool relu, bool reverse) {
  const char* op = "rnn_backward";
  const auto sz = check_rnn_backward(op, grad_y_in, grad_hn, batch_sizes, h0_in, w_hh, y_in);
  const c10::DeviceGuard guard(h0_in.device());
  const cudaStream_t stream = current_stream(h0_in.device());
  const Tensor grad_y = grad_y_in.contiguous(), y = y_in.contiguous(), h0 = h0_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  // The whole sequence in one persistent launch, when chosen (persistent_glue.h); the
  // weight gradient as below.
  if (relu ? persistent_chosen<rnn::Policy<true>>(op, y, sz.B, sz.H, sz.N, true)
           : persistent_chosen<rnn::Policy<false>>(op, y, sz.B, sz.H, sz.N, true)) {
    Tensor grad_gx = empty_output({sz.N, sz.H}, y.options());
    Tensor grad_h0 = empty_output({sz.B, sz.H}, y.options());
    if (persistent_rnn_backward(grad_y, grad_hn.contiguous(), batch_sizes, h0, w_hh.contiguous(),
                                y, relu, reverse, grad_gx, grad_h0)) {
      Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y, h0, persistent_h_prev(y, h0, schedule),
                                               reverse);
      return {grad_gx, grad_h0, grad_w_hh};
    }
  }
  Tensor dh_state = grad_hn.contiguous().clone();  // [B, H]: gradient w.r.t. the h state
  Tensor grad_gx = empty_output({sz.N, sz.H}, y.options());
  // A packed sequence's h_prev rows, gathered by the kernels for grad_w_hh.
  Tensor h_prev = schedule.dense() ? Tensor() : empty_output({sz.N, sz.H}, y.options());

  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    const RnnBackwardStep args{dh_state.data_ptr(), grad_y.data_ptr(), y.data_ptr(),
                               h0.data_ptr(), grad_gx.data_ptr(),
                               h_prev.defined() ? h_prev.data_ptr() : nullptr, sz.H, relu, step};
    check_launch(rnn_backward_step(dtype_of(y), args, stream), "rnn_backward_kernel");
    mm_into(rows(dh_state, 0, b), rows(grad_gx, step.first, b), w_hh);
  }
  Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y, h0, h_prev, reverse);
  return {grad_gx, dh_state, grad_w_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTRNN_CUDA_LIBRARY, FASTRNN_CUDA_KEY, m) {
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace cuda
}  // namespace fastrnn
