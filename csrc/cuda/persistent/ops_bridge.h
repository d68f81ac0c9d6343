#pragma once
// The persistent kernels (persistent.h) as the CUDA backend (cuda_backend.cpp) calls them,
// one function per direction for every cell. persistent_forward / persistent_backward run
// one direction's whole recurrence in one launch and return its result when the selection
// rule picks the persistent kernel (FASTRNN_PERSISTENT and choose; its "=1, but they
// cannot" cases and bad values are errors here); else, or when the grid cannot be
// co-resident right now, nothing, and the backend runs the per-step walk. A CUDA error is
// raised. Arguments and results as every backend's (csrc/common/recurrence.h: checked,
// contiguous, on one CUDA device); the weight gradients are the walk's GEMMs.

#include <ATen/ATen.h>

#include <climits>
#include <functional>
#include <optional>

#include "../../common/recurrence.h"
#include "../../common/schedule.h"
#include "../stream.h"
#include "../torch_glue.h"
#include "persistent.h"

namespace fastrnn {
namespace cuda {
namespace persistent_bridge {

inline const void* in(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr;
}
inline void* out(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr;
}

// Whether the op runs on the persistent kernel: like is a tensor of the op's dtype and
// device; sz its sizes; unsupported: why the op's arguments rule the persistent kernels out
// (an error under FASTRNN_PERSISTENT=1), or null.
template <class Cell>
bool chosen(const char* op, const at::Tensor& like, const RecurrenceSizes& sz, bool backward,
            const char* unsupported) {
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
  const std::optional<DType> dtype = dtype_code(like.scalar_type());
  const bool typed = dtype.has_value() && persistent::takes(*dtype);
  const bool sized = sz.N <= INT_MAX && sz.B * sz.H <= INT_MAX;
  TORCH_CHECK(!forced || (typed && sized), op, ": FASTRNN_PERSISTENT=1, but the persistent ",
              "kernels take float32, float16 and bfloat16 with fewer than 2^31 rows, got ",
              like.scalar_type(), " with ", sz.N, " rows");
  if (!typed || !sized) return false;
  const auto choice = persistent::choose<Cell>(setting.mode, *dtype, int(sz.B), int(sz.H),
                                               like.device().index(), backward);
  TORCH_CHECK(choice != persistent::Choice::kUnsupported, op, ": FASTRNN_PERSISTENT=1, but ",
              "the persistent kernel does not fit B=", sz.B, ", H=", sz.H, " in ",
              like.scalar_type(), " on ", like.device());
  return choice == persistent::Choice::kYes;
}

// Uploads the schedule (pinned, no host sync) and a barrier word, then calls `launch`;
// a CUDA error is raised, a declined launch returns false.
inline bool run(const at::Tensor& like, const Schedule& schedule, const RecurrenceSizes& sz,
                bool reverse, const std::function<bool(const persistent::Problem&)>& launch) {
  const int64_t T = schedule.steps();
  at::Tensor host = at::empty({2 * T}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  int* sched = host.data_ptr<int>();
  for (int64_t t = 0; t < T; ++t) {
    sched[t] = int(schedule.batch_sizes()[t]);
    sched[T + t] = int(schedule.offsets()[t]);
  }
  const at::Tensor device_sched = host.to(like.options().dtype(at::kInt), /*non_blocking=*/true);
  const at::Tensor barrier = at::empty({1}, like.options().dtype(at::kInt));
  const persistent::Problem problem{
      dtype_of(like), int(sz.B), int(sz.H), int(T), reverse, device_sched.data_ptr<int>(),
      reinterpret_cast<unsigned int*>(barrier.data_ptr<int>()), current_stream(like.device()),
      like.device().index()};
  if (launch(problem)) return true;
  check_launch(cudaGetLastError(), "persistent recurrence");
  return false;
}

// [N, P]: the h_prev each packed row's step read (a row of y, or of h0 for rows that
// start at their step), for the weight gradient after a persistent backward; undefined
// for a dense sequence, whose weight gradient needs no gather.
inline at::Tensor h_prev_rows(const at::Tensor& y, const at::Tensor& h0,
                              const Schedule& schedule) {
  return schedule.dense() ? at::Tensor() : previous_rows(y, h0, schedule);
}

// What the persistent kernels lack for these arguments, or null.
template <class Cell>
const char* unsupported(const at::Tensor& w_hr) {
  return Cell::kProjection && w_hr.defined() ? "LSTM projection" : nullptr;
}

}  // namespace persistent_bridge

template <class Cell>
std::optional<ForwardResult> persistent_forward(const ForwardArgs& a) {
  namespace pb = persistent_bridge;
  const RecurrenceSizes& sz = a.size;
  if (!pb::chosen<Cell>(a.op, a.gx, sz, false, pb::unsupported<Cell>(a.w_hr))) return {};
  const at::TensorOptions options = a.gx.options();
  ForwardResult r;
  r.y = at::empty({sz.N, sz.H}, options);
  r.hn = at::empty({sz.B, sz.H}, options);
  if constexpr (Cell::kCellState) r.cn = at::empty({sz.B, sz.H}, options);
  r.saved = at::empty({a.save ? sz.N : 0, Cell::kSaved * sz.H}, options);
  const persistent::ForwardTensors t{pb::in(a.gx), pb::in(a.h0), pb::in(a.c0), pb::in(a.w_hh),
                                     pb::in(a.b_hh), pb::out(r.y), pb::out(r.hn), pb::out(r.cn),
                                     pb::out(r.saved), pb::in(a.unit_params)};
  const Schedule schedule(a.batch_sizes, a.reverse);
  if (!pb::run(a.gx, schedule, sz, a.reverse, [&](const persistent::Problem& pr) {
        return persistent::forward<Cell>(pr, t);
      })) {
    return {};
  }
  return r;
}

template <class Cell>
std::optional<BackwardResult> persistent_backward(const BackwardArgs& a) {
  namespace pb = persistent_bridge;
  const RecurrenceSizes& sz = a.size;
  if (!pb::chosen<Cell>(a.op, a.y, sz, true, pb::unsupported<Cell>(a.w_hr))) return {};
  const at::TensorOptions options = a.y.options();
  BackwardResult r;
  r.grad_gx = at::empty({sz.N, Cell::kGates * sz.H}, options);
  const at::Tensor grad_gh =
      Cell::kSeparateDgh ? at::empty({sz.N, Cell::kGates * sz.H}, options) : r.grad_gx;
  r.grad_h0 = at::empty({sz.B, sz.H}, options);
  if constexpr (Cell::kCellState) r.grad_c0 = at::empty({sz.B, sz.H}, options);
  const persistent::BackwardTensors t{
      pb::in(a.grad_y), pb::in(a.grad_hn), pb::in(a.grad_cn), pb::in(a.h0), pb::in(a.c0),
      pb::in(a.w_hh), pb::in(a.y), pb::in(a.saved), pb::out(r.grad_gx),
      Cell::kSeparateDgh ? pb::out(grad_gh) : nullptr, pb::out(r.grad_h0), pb::out(r.grad_c0),
      pb::in(a.unit_params)};
  const Schedule schedule(a.batch_sizes, a.reverse);
  if (!pb::run(a.y, schedule, sz, a.reverse, [&](const persistent::Problem& pr) {
        return persistent::backward<Cell>(pr, t);
      })) {
    return {};
  }
  // The weight gradients as the per-step walk forms them, from the gradient w.r.t. gh.
  r.grad_w_hh = recurrent_weight_grad(grad_gh, a.y, a.h0, pb::h_prev_rows(a.y, a.h0, schedule),
                                      a.reverse);
  if constexpr (Cell::kProjection) r.grad_w_hr = at::empty({0}, options);
  if constexpr (Cell::kRecurrentBias) {
    r.grad_b_hh = recurrent_bias_grad<Cell>(a, grad_gh, at::Tensor());
  }
  return r;
}

}  // namespace cuda
}  // namespace fastrnn
