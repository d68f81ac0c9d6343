// GRU recurrence on the CPU: per step one recurrent GEMM (with b_hh, which must stay inside
// r * (.)) and one fused pass over the gates; weight gradients as GEMMs after the loop.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../cells/gru.h"
#include "../common/checks.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using c10::optional;

// The gate loops over units [j0, j1) of one row, outside the dispatch macros so that the
// simd pragmas apply. Pointers are at the row's start.

// x: [3H] input side; hh: [3H] = h_prev @ w_hh^T; bias: [3H] = b_hh; h: [H] state,
// updated; y: [H]; saved: [4H] = [r|z|n|h_n], written when kSave.
template <bool kSave, typename scalar_t>
void gru_forward_units(const scalar_t* x, const scalar_t* hh, const scalar_t* bias, scalar_t* h,
                       scalar_t* y, scalar_t* saved, int64_t H, int64_t j0, int64_t j1) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const acc_t h_n = acc_t(hh[2 * H + j]) + acc_t(bias[2 * H + j]);
    acc_t r, z, n, h_new;
    gru::forward<acc_t>(x[j], x[H + j], x[2 * H + j], acc_t(hh[j]) + acc_t(bias[j]),
                        acc_t(hh[H + j]) + acc_t(bias[H + j]), h_n, h[j], r, z, n, h_new);
    if constexpr (kSave) {
      saved[j] = r;
      saved[H + j] = z;
      saved[2 * H + j] = n;
      saved[3 * H + j] = h_n;
    }
    h[j] = h_new;
    y[j] = h_new;
  }
}

// dh + dh_direct + grad_y: [H] each, the gradient w.r.t. h; dh_direct is replaced by the
// direct part of the gradient w.r.t. h_prev. saved: [4H]; h_prev: [H]; dx, dhh: [3H].
template <typename scalar_t>
void gru_backward_units(const scalar_t* dh, scalar_t* dh_direct, const scalar_t* grad_y,
                        const scalar_t* saved, const scalar_t* h_prev, scalar_t* dx,
                        scalar_t* dhh, int64_t H, int64_t j0, int64_t j1) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    acc_t dx_r, dx_z, dx_n, dh_n, dh_prev_direct;
    gru::backward<acc_t>(acc_t(dh[j]) + acc_t(dh_direct[j]) + acc_t(grad_y[j]), saved[j],
                         saved[H + j], saved[2 * H + j], saved[3 * H + j], h_prev[j], dx_r, dx_z,
                         dx_n, dh_n, dh_prev_direct);
    dx[j] = dhh[j] = dx_r;
    dx[H + j] = dhh[H + j] = dx_z;
    dx[2 * H + j] = dx_n;
    dhh[2 * H + j] = dh_n;
    dh_direct[j] = dh_prev_direct;
  }
}

// gx: [N, 3H] = x @ W_ih^T + b_ih; h0: [B, H]; w_hh: [3H, H]; b_hh: [3H] or none.
// Returns y: [N, H]; hn: [B, H]; saved: [N, 4H] = [r|z|n|h_n] per row, read by gru_backward
// ([0, 4H] unless save).
std::tuple<Tensor, Tensor, Tensor> gru_forward(const Tensor& gx_in, const Tensor& batch_sizes,
                                               const Tensor& h0, const Tensor& w_hh,
                                               const optional<Tensor>& b_hh, bool reverse,
                                               bool save) {
  const char* op = "gru_forward";
  const auto sz = check_gru_forward(op, gx_in, batch_sizes, h0, w_hh, b_hh);
  const int64_t H = sz.H;
  const Tensor gx = gx_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);

  Tensor h_state = h0.contiguous().clone();  // [B, H], rows updated as steps visit them
  Tensor y = at::empty({sz.N, H}, gx.options());
  Tensor saved = at::empty({save ? sz.N : 0, gru::kSaved * H}, gx.options());
  Tensor gh = at::empty({sz.B, 3 * H}, gx.options());  // h_prev @ w_hh^T
  const Tensor bias = b_hh.has_value() ? b_hh->contiguous() : at::zeros({3 * H}, gx.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "gru_forward", [&] {
    const StepGemm<scalar_t> recurrent(w_hh.t());  // [b, H] -> [b, 3H]
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      recurrent(b, h_state.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>());
      const scalar_t* gx_p = gx.data_ptr<scalar_t>() + first * 3 * H;
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      const scalar_t* bias_p = bias.data_ptr<scalar_t>();
      scalar_t* saved_p = save ? saved.data_ptr<scalar_t>() + first * 4 * H : nullptr;
      scalar_t* h_p = h_state.data_ptr<scalar_t>();
      scalar_t* y_p = y.data_ptr<scalar_t>() + first * H;
      const auto units = save ? gru_forward_units<true, scalar_t>
                              : gru_forward_units<false, scalar_t>;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        units(gx_p + row * 3 * H, gh_p + row * 3 * H, bias_p, h_p + row * H, y_p + row * H,
              save ? saved_p + row * 4 * H : nullptr, H, j0, j1);
      });
    }
  });
  return {y, h_state, saved};
}

// Gradients of gru_forward. grad_y: [N, H]; grad_hn: [B, H]; the rest as passed to and
// returned by gru_forward (saved is only read).
// Returns grad_gx: [N, 3H]; grad_h0: [B, H]; grad_w_hh: [3H, H]; grad_b_hh: [3H], or [0]
// without bias.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_y_in, const Tensor& grad_hn, const Tensor& batch_sizes,
    const Tensor& h0, const Tensor& w_hh, const Tensor& y, const Tensor& saved_in,
    bool has_bias, bool reverse) {
  const char* op = "gru_backward";
  const auto sz = check_gru_backward(op, grad_y_in, grad_hn, batch_sizes, h0, w_hh, y, saved_in);
  const int64_t H = sz.H;
  const Tensor grad_y = grad_y_in.contiguous(), saved = saved_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);

  // The gradient w.r.t. the h state is dh_state + dh_direct ([B, H] each): the parts
  // through w_hh and through z * h_prev.
  Tensor dh_state = grad_hn.contiguous().clone();
  Tensor dh_direct = at::zeros_like(dh_state);
  Tensor grad_gx = at::empty({sz.N, 3 * H}, saved.options());
  Tensor grad_gh = at::empty({sz.N, 3 * H}, saved.options());  // w.r.t. h_prev @ w_hh^T + b_hh
  const Tensor y_c = y.contiguous(), h0_c = h0.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, saved.scalar_type(), "gru_backward", [&] {
    const StepGemm<scalar_t> recurrent(w_hh);  // [b, 3H] -> [b, H]
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      const scalar_t* gy_p = grad_y.data_ptr<scalar_t>() + first * H;
      const scalar_t* sv_p = saved.data_ptr<scalar_t>() + first * 4 * H;
      const scalar_t* dh_p = dh_state.data_ptr<scalar_t>();
      scalar_t* dhd_p = dh_direct.data_ptr<scalar_t>();
      scalar_t* dx_p = grad_gx.data_ptr<scalar_t>() + first * 3 * H;
      scalar_t* dhh_p = grad_gh.data_ptr<scalar_t>() + first * 3 * H;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        const scalar_t* h_prev = previous_row(y_c.data_ptr<scalar_t>(), H,
                                              h0_c.data_ptr<scalar_t>(), schedule, s, row, H);
        gru_backward_units(dh_p + row * H, dhd_p + row * H, gy_p + row * H, sv_p + row * 4 * H,
                           h_prev, dx_p + row * 3 * H, dhh_p + row * 3 * H, H, j0, j1);
      });
      recurrent(b, dhh_p, dh_state.data_ptr<scalar_t>());
    }
  });

  Tensor grad_w_hh = recurrent_weight_grad(grad_gh, y_c, h0, schedule, reverse);
  Tensor grad_b_hh = has_bias ? grad_gh.sum(0) : at::empty({0}, saved.options());
  return {grad_gx, dh_state.add_(dh_direct), grad_w_hh, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace cpu
}  // namespace fastrnn
