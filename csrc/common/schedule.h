#pragma once
// The walk over packed time steps, computed on the host from batch_sizes (a CPU tensor):
// both backends take their per-step row offsets from here.

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "step.h"

namespace fastrnn {

// Step s visits time t = reverse ? T-1-s : s, whose rows are
// data[first_row(s) : first_row(s) + rows(s)] (batch_sizes sorted longest first, so
// rows shrink along t and grow along a reverse walk).
class Schedule {
 public:
  Schedule(const at::Tensor& batch_sizes, bool reverse) : reverse_(reverse) {
    const auto sizes = batch_sizes.contiguous();
    const int64_t* b = sizes.data_ptr<int64_t>();
    batch_.assign(b, b + sizes.numel());
    offset_.resize(batch_.size());
    int64_t offset = 0;
    for (size_t t = 0; t < batch_.size(); ++t) {
      offset_[t] = offset;
      offset += batch_[t];
    }
  }
  int64_t steps() const { return static_cast<int64_t>(batch_.size()); }
  bool reverse() const { return reverse_; }
  // By time t (not step): the rows of t and the first packed row of t, the exclusive
  // prefix sum of batch_sizes (the persistent kernels read both from device memory).
  const std::vector<int64_t>& batch_sizes() const { return batch_; }
  const std::vector<int64_t>& offsets() const { return offset_; }
  int64_t rows(int64_t s) const { return batch_[time(s)]; }
  int64_t first_row(int64_t s) const { return offset_[time(s)]; }
  // Rows of step s that were also rows of step s-1: their previous state is that step's
  // row; the others start from the initial state.
  int64_t carried_rows(int64_t s) const { return s == 0 ? 0 : std::min(rows(s), rows(s - 1)); }
  Step step(int64_t s) const {
    return {rows(s), first_row(s), carried_rows(s), s == 0 ? 0 : first_row(s - 1)};
  }
  // Whether every step has the same rows (a dense [T, B] sequence).
  bool dense() const {
    return std::all_of(batch_.begin(), batch_.end(), [&](int64_t b) { return b == batch_[0]; });
  }

 private:
  int64_t time(int64_t s) const { return reverse_ ? steps() - 1 - s : s; }
  bool reverse_;
  std::vector<int64_t> batch_, offset_;
};

// grad^T @ h_prev, the recurrent weight's gradient, for a dense sequence ([T, B] rows), into
// out [G, P] (returned): grad: [N, G] w.r.t. each step's h_prev @ w_hh^T; y: [N, P]; h0:
// [B, P]. Step t's h_prev is y of t-1 (h0 for t = 0), or of t+1 in reverse (h0 for t = T-1):
// two GEMMs on views, the small one (K = B) accumulated in place into the large one's
// result. Out of place, addmm copies the [G, P] result once more: measured 2.9 ms against
// 1.3 ms at T200 B1 H256.
inline at::Tensor recurrent_weight_grad_dense(at::Tensor out, const at::Tensor& grad,
                                              const at::Tensor& y, const at::Tensor& h0,
                                              bool reverse) {
  const int64_t N = y.size(0), B = h0.size(0);
  if (N == B) return at::mm_out(out, grad.t(), h0);  // one step (a cell call)
  const at::Tensor grad_first = reverse ? grad.narrow(0, N - B, B) : grad.narrow(0, 0, B);
  const at::Tensor grad_rest = reverse ? grad.narrow(0, 0, N - B) : grad.narrow(0, B, N - B);
  const at::Tensor y_prev = reverse ? y.narrow(0, B, N - B) : y.narrow(0, 0, N - B);
  return at::mm_out(out, grad_rest.t(), y_prev).addmm_(grad_first.t(), h0);
}

// [N, X]: each packed row's previous state, the previous step's row of `states` ([N, X]), or
// for a row that starts at its step its row of `init` ([B, X]); on their device. One copy
// of slices (each step's carried rows, then its fresh ones): no index to upload, so no
// host sync and nothing a captured CUDA graph would read from host memory.
inline at::Tensor previous_rows(const at::Tensor& states, const at::Tensor& init,
                                const Schedule& schedule) {
  std::vector<at::Tensor> parts;  // in packed order: by time, not by step
  for (int64_t t = 0; t < schedule.steps(); ++t) {
    const Step step = schedule.step(schedule.reverse() ? schedule.steps() - 1 - t : t);
    if (step.carried > 0) parts.push_back(states.narrow(0, step.prev_first, step.carried));
    if (step.rows > step.carried) {
      parts.push_back(init.narrow(0, step.carried, step.rows - step.carried));
    }
  }
  return parts.empty() ? states.new_empty({0, states.size(1)}) : at::cat(parts);
}

}  // namespace fastrnn
