// Elman RNN (tanh or relu) recurrence on the CPU: per step one recurrent GEMM and one fused
// pass; the weight gradient as one GEMM after the loop.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../cells/rnn.h"
#include "../common/checks.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;

// The loops over units [begin, end) of the flattened [b, H] step, outside the dispatch
// macros so that the simd pragmas apply.

// h = y = act(gx + gh), all [b, H].
template <bool kRelu, typename scalar_t>
void rnn_forward_units(const scalar_t* gx, const scalar_t* gh, scalar_t* h, scalar_t* y,
                       int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t k = begin; k < end; ++k) {
    const acc_t h_k = rnn::forward<kRelu, acc_t>(acc_t(gx[k]) + acc_t(gh[k]));
    h[k] = h_k;
    y[k] = h_k;
  }
}

// da = gradient w.r.t. the pre-activation, from dh + grad_y and the output y; all [b, H].
template <bool kRelu, typename scalar_t>
void rnn_backward_units(const scalar_t* dh, const scalar_t* grad_y, const scalar_t* y,
                        scalar_t* da, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t k = begin; k < end; ++k) {
    da[k] = rnn::backward<kRelu, acc_t>(acc_t(dh[k]) + acc_t(grad_y[k]), acc_t(y[k]));
  }
}

template <bool kRelu>
void rnn_forward_loop(const Tensor& gx, const Schedule& schedule, const Tensor& w_hh,
                      Tensor& h_state, Tensor& y, Tensor& gh) {
  const int64_t H = h_state.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "rnn_forward", [&] {
    const StepGemm<scalar_t> recurrent(w_hh.t());  // [b, H] -> [b, H]
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      recurrent(b, h_state.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>());
      const scalar_t* gx_p = gx.data_ptr<scalar_t>() + first * H;
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      scalar_t* h_p = h_state.data_ptr<scalar_t>();
      scalar_t* y_p = y.data_ptr<scalar_t>() + first * H;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        rnn_forward_units<kRelu>(gx_p, gh_p, h_p, y_p, row * H + j0, row * H + j1);
      });
    }
  });
}

template <bool kRelu>
void rnn_backward_loop(const Tensor& grad_y, const Tensor& y, const Schedule& schedule,
                       const Tensor& w_hh, Tensor& dh_state, Tensor& grad_gx) {
  const int64_t H = dh_state.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "rnn_backward", [&] {
    const StepGemm<scalar_t> recurrent(w_hh);  // [b, H] -> [b, H]
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      const scalar_t* gy_p = grad_y.data_ptr<scalar_t>() + first * H;
      const scalar_t* y_p = y.data_ptr<scalar_t>() + first * H;
      const scalar_t* dh_p = dh_state.data_ptr<scalar_t>();
      scalar_t* da_p = grad_gx.data_ptr<scalar_t>() + first * H;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        rnn_backward_units<kRelu>(dh_p, gy_p, y_p, da_p, row * H + j0, row * H + j1);
      });
      recurrent(b, da_p, dh_state.data_ptr<scalar_t>());
    }
  });
}

// gx: [N, H] = x @ W_ih^T + b_ih + b_hh; h0: [B, H]; w_hh: [H, H].
// Returns y: [N, H] (also read by rnn_backward); hn: [B, H].
std::tuple<Tensor, Tensor> rnn_forward(const Tensor& gx_in, const Tensor& batch_sizes,
                                       const Tensor& h0, const Tensor& w_hh, bool relu,
                                       bool reverse) {
  const char* op = "rnn_forward";
  const auto sz = check_rnn_forward(op, gx_in, batch_sizes, h0, w_hh);
  const Tensor gx = gx_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  Tensor h_state = h0.contiguous().clone();  // [B, H], rows updated as steps visit them
  Tensor y = at::empty({sz.N, sz.H}, gx.options());
  Tensor gh = at::empty({sz.B, sz.H}, gx.options());  // h_prev @ w_hh^T
  if (relu) {
    rnn_forward_loop<true>(gx, schedule, w_hh, h_state, y, gh);
  } else {
    rnn_forward_loop<false>(gx, schedule, w_hh, h_state, y, gh);
  }
  return {y, h_state};
}

// Gradients of rnn_forward. grad_y: [N, H]; grad_hn: [B, H]; y as returned by rnn_forward.
// Returns grad_gx: [N, H]; grad_h0: [B, H]; grad_w_hh: [H, H].
std::tuple<Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_y_in, const Tensor& grad_hn,
                                                const Tensor& batch_sizes, const Tensor& h0,
                                                const Tensor& w_hh, const Tensor& y_in,
                                                bool relu, bool reverse) {
  const char* op = "rnn_backward";
  const auto sz = check_rnn_backward(op, grad_y_in, grad_hn, batch_sizes, h0, w_hh, y_in);
  const Tensor grad_y = grad_y_in.contiguous(), y = y_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  Tensor dh_state = grad_hn.contiguous().clone();  // [B, H]: gradient w.r.t. the h state
  Tensor grad_gx = at::empty({sz.N, sz.H}, y.options());
  if (relu) {
    rnn_backward_loop<true>(grad_y, y, schedule, w_hh, dh_state, grad_gx);
  } else {
    rnn_backward_loop<false>(grad_y, y, schedule, w_hh, dh_state, grad_gx);
  }
  Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y, h0, schedule, reverse);
  return {grad_gx, dh_state, grad_w_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("rnn_forward", &rnn_forward);
  m.impl("rnn_backward", &rnn_backward);
}

}  // namespace cpu
}  // namespace fastrnn
