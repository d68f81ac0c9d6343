#pragma once
// The persistent kernels (persistent/) as the CUDA ops call them. An op first asks
// persistent_chosen (the selection rule: choose_persistent and FASTRNN_PERSISTENT, whose
// "=1 but it does not fit" and bad values are errors here); if chosen, it allocates its
// outputs and calls its persistent_* function, which runs one direction's whole recurrence
// in one launch and returns true, or false when the grid cannot be co-resident right now
// (then the op takes its per-step path; a CUDA error is raised).
// Tensors as the op's own (contiguous, on one CUDA device); outputs preallocated.
// The host emulation of the ops (FASTRNN_CUDA_EMULATION) has no persistent kernels.

#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "glue.h"
#ifndef FASTRNN_CUDA_EMULATION
#include "persistent/persistent.h"
#endif

namespace fastrnn {
namespace cuda {


// [N, P]: the h_prev each packed row's step read (a row of y, or of h0 for rows that
// start at their step), for the weight gradient after a persistent backward; undefined
// for a dense sequence, whose weight gradient needs no gather.
inline at::Tensor persistent_h_prev(const at::Tensor& y, const at::Tensor& h0,
                                    const Schedule& schedule) {
  if (schedule.dense()) return at::Tensor();
  const int64_t N = y.size(0);
  at::Tensor index = at::empty({N}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* ix = index.data_ptr<int64_t>();
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    for (int64_t i = 0; i < step.rows; ++i) {
      const int64_t prev = previous_packed_row(step, i);
      ix[step.first + i] = prev >= 0 ? prev : N + i;  // rows of [y; h0]
    }
  }
  const at::Tensor device_index = index.to(y.options().dtype(at::kLong), /*non_blocking=*/true);
  return at::cat({y, h0}).index_select(0, device_index);
}

#ifdef FASTRNN_CUDA_EMULATION

template <class Cell>
bool persistent_chosen(const char*, const at::Tensor&, int64_t, int64_t, int64_t, bool,
                       const char* = nullptr) {
  return false;
}
inline bool persistent_lstm_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, bool,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&) {
  return false;
}
inline bool persistent_lstm_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     bool, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&) {
  return false;
}
inline bool persistent_gru_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, bool, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&) {
  return false;
}
inline bool persistent_gru_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, bool, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&) {
  return false;
}
inline bool persistent_rnn_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, bool, bool, const at::Tensor&,
                                   const at::Tensor&) {
  return false;
}
inline bool persistent_rnn_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                                    bool, const at::Tensor&, const at::Tensor&) {
  return false;
}

#else

namespace persistent_detail {

inline const void* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr;
}
inline void* out(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr;
}

inline fastrnn::DType persistent_dtype(at::ScalarType type) {
  return type == at::kFloat ? fastrnn::DType::kFloat32
         : type == at::kHalf ? fastrnn::DType::kFloat16
                             : fastrnn::DType::kBFloat16;
}

}  // namespace persistent_detail

// Whether the op runs on the persistent kernel: like is a tensor of the op's dtype and
// device; B batch, H hidden size, N packed rows; unsupported: why the op's arguments rule
// the persistent kernels out (an error under FASTRNN_PERSISTENT=1), or null.
template <class Cell>
bool persistent_chosen(const char* op, const at::Tensor& like, int64_t B, int64_t H, int64_t N,
                       bool backward, const char* unsupported = nullptr) {
  const persistent::Setting setting = persistent::current_setting();
  TORCH_CHECK(setting.mode != persistent::Setting::kInvalid,
              "FASTRNN_PERSISTENT must be auto, 0 or 1, got '", setting.text, "'");
  const bool forced = setting.mode == persistent::Setting::kForced;
  if (setting.mode == persistent::Setting::kNever) return false;
  if (unsupported != nullptr) {
    TORCH_CHECK(!forced, op, ": FASTRNN_PERSISTENT=1, but the persistent kernels have no ",
                unsupported);
    return false;
  }
  // Not inside CUDA-graph capture: the schedule is uploaded from pinned host memory that
  // is recycled after the call, which a replay would read again.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t capture_error = cudaStreamIsCapturing(current_stream(like.device()), &capture);
  if (capture_error != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    (void)cudaGetLastError();
    TORCH_CHECK(!forced, op, ": FASTRNN_PERSISTENT=1, but the persistent kernels are not ",
                "captured into CUDA graphs");
    return false;
  }
  const auto type = like.scalar_type();
  const bool typed = type == at::kFloat || type == at::kHalf || type == at::kBFloat16;
  const bool sized = N <= INT_MAX && B * H <= INT_MAX;
  TORCH_CHECK(!forced || (typed && sized), op, ": FASTRNN_PERSISTENT=1, but the persistent ",
              "kernels take float32, float16 and bfloat16 with fewer than 2^31 rows, got ",
              type, " with ", N, " rows");
  if (!typed || !sized) return false;
  const auto choice = persistent::choose<Cell>(setting.mode, persistent_detail::persistent_dtype(type),
                                               int(B), int(H), like.device().index(), backward);
  TORCH_CHECK(choice != persistent::Choice::kUnsupported, op, ": FASTRNN_PERSISTENT=1, but ",
              "the persistent kernel does not fit B=", B, ", H=", H, " in ", type, " on ",
              like.device());
  return choice == persistent::Choice::kYes;
}

namespace persistent_detail {

// Uploads the schedule (pinned, no host sync) and a barrier word, then calls `launch`;
// a CUDA error is raised, a declined launch returns false.
inline bool run(const at::Tensor& like, const at::Tensor& batch_sizes, int64_t B, int64_t H,
                bool reverse, const std::function<bool(const persistent::Problem&)>& launch) {
  const Schedule schedule(batch_sizes, reverse);
  const int64_t T = schedule.steps();
  at::Tensor host = at::empty({2 * T}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  int* sched_host = host.data_ptr<int>();
  for (int64_t t = 0; t < T; ++t) {
    sched_host[t] = int(schedule.batch_sizes()[t]);
    sched_host[T + t] = int(schedule.offsets()[t]);
  }
  const at::Tensor sched = host.to(like.options().dtype(at::kInt), /*non_blocking=*/true);
  const at::Tensor barrier = at::empty({1}, like.options().dtype(at::kInt));
  const persistent::Problem problem{
      persistent_dtype(like.scalar_type()),
      int(B), int(H), int(T), reverse, sched.data_ptr<int>(),
      reinterpret_cast<unsigned int*>(barrier.data_ptr<int>()), current_stream(like.device()),
      like.device().index()};
  if (launch(problem)) return true;
  check_launch(cudaGetLastError(), "persistent recurrence");
  return false;
}

}  // namespace persistent_detail

// lstm_forward without projection: gx [N, 4H], h0, c0 [B, H], w_hh [4H, H] -> y [N, H],
// hn, cn [B, H], saved [N, 5H] or [0, 5H].
inline bool persistent_lstm_forward(const at::Tensor& gx, const at::Tensor& batch_sizes,
                                    const at::Tensor& h0, const at::Tensor& c0,
                                    const at::Tensor& w_hh, bool reverse, const at::Tensor& y,
                                    const at::Tensor& hn, const at::Tensor& cn,
                                    const at::Tensor& saved) {
  using namespace persistent_detail;
  return run(gx, batch_sizes, h0.size(0), c0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               return persistent::forward<lstm::Policy>(
                   pr, {ptr(gx), ptr(h0), ptr(c0), ptr(w_hh), nullptr, out(y), out(hn), out(cn),
                        out(saved)});
             });
}

// lstm_backward without projection -> grad_gx [N, 4H], grad_h0, grad_c0 [B, H].
inline bool persistent_lstm_backward(const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                     const at::Tensor& grad_cn, const at::Tensor& batch_sizes,
                                     const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& w_hh, const at::Tensor& y,
                                     const at::Tensor& saved, bool reverse,
                                     const at::Tensor& grad_gx, const at::Tensor& grad_h0,
                                     const at::Tensor& grad_c0) {
  using namespace persistent_detail;
  return run(saved, batch_sizes, h0.size(0), c0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               return persistent::backward<lstm::Policy>(
                   pr, {ptr(grad_y), ptr(grad_hn), ptr(grad_cn), ptr(h0), ptr(c0), ptr(w_hh),
                        ptr(y), ptr(saved), out(grad_gx), nullptr, out(grad_h0), out(grad_c0)});
             });
}

// gru_forward: gx [N, 3H], h0 [B, H], w_hh [3H, H], b_hh [3H] or undefined -> y [N, H],
// hn [B, H], saved [N, 4H] or [0, 4H].
inline bool persistent_gru_forward(const at::Tensor& gx, const at::Tensor& batch_sizes,
                                   const at::Tensor& h0, const at::Tensor& w_hh,
                                   const at::Tensor& b_hh, bool reverse, const at::Tensor& y,
                                   const at::Tensor& hn, const at::Tensor& saved) {
  using namespace persistent_detail;
  return run(gx, batch_sizes, h0.size(0), h0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               return persistent::forward<gru::Policy>(
                   pr, {ptr(gx), ptr(h0), nullptr, ptr(w_hh), ptr(b_hh), out(y), out(hn), nullptr,
                        out(saved)});
             });
}

// gru_backward -> grad_gx, grad_gh [N, 3H] (w.r.t. h_prev @ w_hh^T + b_hh), grad_h0 [B, H].
inline bool persistent_gru_backward(const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                    const at::Tensor& batch_sizes, const at::Tensor& h0,
                                    const at::Tensor& w_hh, const at::Tensor& y,
                                    const at::Tensor& saved, bool reverse,
                                    const at::Tensor& grad_gx, const at::Tensor& grad_gh,
                                    const at::Tensor& grad_h0) {
  using namespace persistent_detail;
  return run(saved, batch_sizes, h0.size(0), h0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               return persistent::backward<gru::Policy>(
                   pr, {ptr(grad_y), ptr(grad_hn), nullptr, ptr(h0), nullptr, ptr(w_hh), ptr(y),
                        ptr(saved), out(grad_gx), out(grad_gh), out(grad_h0), nullptr});
             });
}

// rnn_forward: gx [N, H], h0 [B, H], w_hh [H, H] -> y [N, H], hn [B, H].
inline bool persistent_rnn_forward(const at::Tensor& gx, const at::Tensor& batch_sizes,
                                   const at::Tensor& h0, const at::Tensor& w_hh, bool relu,
                                   bool reverse, const at::Tensor& y, const at::Tensor& hn) {
  using namespace persistent_detail;
  return run(gx, batch_sizes, h0.size(0), h0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               const persistent::ForwardTensors t{ptr(gx), ptr(h0), nullptr, ptr(w_hh), nullptr,
                                                  out(y), out(hn), nullptr, nullptr};
               return relu ? persistent::forward<rnn::Policy<true>>(pr, t)
                           : persistent::forward<rnn::Policy<false>>(pr, t);
             });
}

// rnn_backward -> grad_gx [N, H], grad_h0 [B, H].
inline bool persistent_rnn_backward(const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                    const at::Tensor& batch_sizes, const at::Tensor& h0,
                                    const at::Tensor& w_hh, const at::Tensor& y, bool relu,
                                    bool reverse, const at::Tensor& grad_gx,
                                    const at::Tensor& grad_h0) {
  using namespace persistent_detail;
  return run(y, batch_sizes, h0.size(0), h0.size(1), reverse,
             [&](const persistent::Problem& pr) {
               const persistent::BackwardTensors t{ptr(grad_y), ptr(grad_hn), nullptr, ptr(h0),
                                                   nullptr, ptr(w_hh), ptr(y), nullptr,
                                                   out(grad_gx), nullptr, out(grad_h0), nullptr};
               return relu ? persistent::backward<rnn::Policy<true>>(pr, t)
                           : persistent::backward<rnn::Policy<false>>(pr, t);
             });
}

#endif  // FASTRNN_CUDA_EMULATION

}  // namespace cuda
}  // namespace fastrnn
