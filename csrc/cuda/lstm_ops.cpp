// LSTM recurrence on CUDA: per step one recurrent GEMM (cuBLAS through ATen; plus one
// projection GEMM when proj_size > 0) and one fused kernel (lstm.cu); weight gradients as
// GEMMs after the loop. Everything runs on the caller's current stream, without host syncs.

#include <torch/library.h>

#include "glue.h"
#include "persistent_glue.h"

namespace fastrnn {
namespace cuda {
namespace {

using at::Tensor;
using c10::optional;

// gh[0 : rows] = h_prev @ w_t for a step whose h state lives in y: its carried rows'
// h_prev are the previous step's rows of y, the others' rows of h0 ([B, P], contiguous).
void recurrent_gemm_from_y(const Tensor& gh, const Tensor& y, const Tensor& h0, const Step& step,
                           const Tensor& w_t) {
  const int64_t carried = step.carried, fresh = step.rows - step.carried;
  if (carried > 0) mm_into(rows(gh, 0, carried), rows(y, step.prev_first, carried), w_t);
  if (fresh > 0) mm_into(rows(gh, carried, fresh), rows(h0, carried, fresh), w_t);
}

// gx: [N, 4H] pre-activations from the input side (biases included); h0: [B, P];
// c0: [B, H]; w_hh: [4H, P]; w_hr: [P, H] or none (then P = H).
// Returns y: [N, P]; hn: [B, P]; cn: [B, H]; saved: [N, 5H] = [i|f|g|o|c] per row when
// save, read by lstm_backward, else [0, 5H].
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& gx_in,
                                                       const Tensor& batch_sizes,
                                                       const Tensor& h0, const Tensor& c0,
                                                       const Tensor& w_hh,
                                                       const optional<Tensor>& w_hr,
                                                       bool reverse, bool save) {
  const char* op = "lstm_forward";
  const auto sz = check_lstm_forward(op, gx_in, batch_sizes, h0, c0, w_hh, w_hr);
  const c10::DeviceGuard guard(h0.device());
  const cudaStream_t stream = current_stream(h0.device());
  const int64_t H = sz.H, P = sz.P;
  const Tensor gx = gx_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  const bool proj = w_hr.has_value();

  // The whole sequence in one persistent launch, when chosen (persistent_glue.h).
  if (persistent_chosen<lstm::Policy>(op, gx, sz.B, H, sz.N, false,
                        proj ? "LSTM projection" : nullptr)) {
    Tensor y = empty_output({sz.N, H}, gx.options()), hn = empty_output({sz.B, H}, gx.options());
    Tensor cn = empty_output({sz.B, H}, gx.options());
    Tensor saved = empty_output({save ? sz.N : 0, lstm::kSaved * H}, gx.options());
    if (persistent_lstm_forward(gx, batch_sizes, h0.contiguous(), c0.contiguous(),
                                w_hh.contiguous(), reverse, y, hn, cn, saved)) {
      return {y, hn, cn, saved};
    }
  }

  // The h state: without projection a [B, P] buffer that the kernel updates; with it, y
  // itself (the projection GEMM writes y's rows, the next step's GEMM reads them) and hn
  // gets each row's last h when its sequence ends.
  const Tensor h0_c = h0.contiguous();
  Tensor h_state = proj ? empty_output({sz.B, P}, gx.options()) : h0_c.clone();
  Tensor c_state = accumulation_copy(c0);  // [B, H], updated in place by the kernel
  Tensor y = empty_output({sz.N, P}, gx.options());
  Tensor saved = empty_output({save ? sz.N : 0, lstm::kSaved * H}, gx.options());
  Tensor gh = empty_output({sz.B, lstm::kGates * H}, gx.options());    // h_prev @ w_hh^T
  Tensor m = proj ? empty_output({sz.B, H}, gx.options()) : Tensor();  // o * tanh(c)
  const Tensor w_hh_t = w_hh.t(), w_hr_t = proj ? w_hr->t() : Tensor();

  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    if (proj) {
      recurrent_gemm_from_y(gh, y, h0_c, step, w_hh_t);
    } else {
      mm_into(rows(gh, 0, b), rows(h_state, 0, b), w_hh_t);
    }
    // Without projection the kernel writes h to the state and y itself.
    const LstmForwardStep args{gx.data_ptr(), gh.data_ptr(), c_state.data_ptr(),
                               proj ? m.data_ptr() : h_state.data_ptr(),
                               proj ? nullptr : y.data_ptr(), save ? saved.data_ptr() : nullptr,
                               H, step};
    check_launch(lstm_forward_step(dtype_of(gx), args, stream), "lstm_forward_kernel");
    if (proj) {
      mm_into(rows(y, step.first, b), rows(m, 0, b), w_hr_t);
      // Rows [next, b) do not go on to the next step: their h is final.
      const int64_t next = s + 1 < schedule.steps() ? schedule.carried_rows(s + 1) : 0;
      if (next < b) rows(h_state, next, b - next).copy_(rows(y, step.first + next, b - next));
    }
  }
  return {y, h_state, c_state.to(gx.scalar_type()), saved};
}

// Gradients of lstm_forward. grad_y: [N, P]; grad_hn: [B, P]; grad_cn: [B, H]; the rest
// as passed to and returned by lstm_forward with save (saved is only read).
// Returns grad_gx: [N, 4H]; grad_h0: [B, P]; grad_c0: [B, H]; grad_w_hh: [4H, P];
// grad_w_hr: [P, H], or [0] without projection.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_y_in, const Tensor& grad_hn, const Tensor& grad_cn,
    const Tensor& batch_sizes, const Tensor& h0_in, const Tensor& c0_in, const Tensor& w_hh,
    const optional<Tensor>& w_hr, const Tensor& y_in, const Tensor& saved_in, bool reverse) {
  const char* op = "lstm_backward";
  const auto sz = check_lstm_backward(op, grad_y_in, grad_hn, grad_cn, batch_sizes, h0_in, c0_in,
                      w_hh, w_hr, y_in, saved_in);
  const int64_t H = sz.H, P = sz.P;
  const c10::DeviceGuard guard(h0_in.device());
  const cudaStream_t stream = current_stream(h0_in.device());
  const Tensor grad_y = grad_y_in.contiguous(), saved = saved_in.contiguous();
  const Tensor y = y_in.contiguous(), h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  const bool proj = w_hr.has_value();
  const auto options = saved.options();

  // The whole sequence in one persistent launch, when chosen (persistent_glue.h); the
  // weight gradient as below.
  if (persistent_chosen<lstm::Policy>(op, saved, sz.B, H, sz.N, true,
                        proj ? "LSTM projection" : nullptr)) {
    Tensor grad_gx = empty_output({sz.N, 4 * H}, options);
    Tensor grad_h0 = empty_output({sz.B, H}, options), grad_c0 = empty_output({sz.B, H}, options);
    if (persistent_lstm_backward(grad_y, grad_hn.contiguous(), grad_cn.contiguous(), batch_sizes,
                                 h0, c0, w_hh.contiguous(), y, saved, reverse, grad_gx, grad_h0,
                                 grad_c0)) {
      Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y, h0, persistent_h_prev(y, h0, schedule),
                                               reverse);
      return {grad_gx, grad_h0, grad_c0, grad_w_hh, at::empty({0}, options)};
    }
  }

  Tensor dh_state = grad_hn.contiguous().clone();  // [B, P]: gradient w.r.t. the h state
  Tensor dc_state = accumulation_copy(grad_cn);  // [B, H], updated in place by the kernel
  Tensor grad_gx = empty_output({sz.N, 4 * H}, options);
  Tensor dh_all = proj ? empty_output({sz.N, P}, options) : Tensor();  // for grad_w_hr
  Tensor m_all = proj ? empty_output({sz.N, H}, options) : Tensor();   // o * tanh(c), likewise
  Tensor dm = proj ? empty_output({sz.B, H}, options) : Tensor();
  // A packed sequence's h_prev rows, gathered by the kernels for grad_w_hh.
  Tensor h_prev = schedule.dense() ? Tensor() : empty_output({sz.N, P}, options);

  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    if (proj) {  // dh = grad_y + dh_state, then back through h = m @ w_hr^T
      Tensor dh = rows(dh_all, step.first, b);
      at::add_out(dh, rows(dh_state, 0, b), rows(grad_y, step.first, b));
      mm_into(rows(dm, 0, b), dh, *w_hr);
    }
    const LstmBackwardStep args{proj ? dm.data_ptr() : dh_state.data_ptr(),
                                proj ? nullptr : grad_y.data_ptr(),
                                dc_state.data_ptr(),
                                saved.data_ptr(),
                                c0.data_ptr(),
                                grad_gx.data_ptr(),
                                proj ? m_all.data_ptr() : nullptr,
                                y.data_ptr(),
                                h0.data_ptr(),
                                h_prev.defined() ? h_prev.data_ptr() : nullptr,
                                H,
                                P,
                                step};
    check_launch(lstm_backward_step(dtype_of(saved), args, stream), "lstm_backward_kernel");
    mm_into(rows(dh_state, 0, b), rows(grad_gx, step.first, b), w_hh);
  }

  Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y, h0, h_prev, reverse);
  Tensor grad_w_hr = proj ? at::mm(dh_all.t(), m_all) : at::empty({0}, options);
  return {grad_gx, dh_state, dc_state.to(saved.scalar_type()), grad_w_hh, grad_w_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(FASTRNN_CUDA_LIBRARY, FASTRNN_CUDA_KEY, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace cuda
}  // namespace fastrnn
