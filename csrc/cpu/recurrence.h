#pragma once
// Pieces every CPU recurrence shares: the walk over packed time steps, per-step GEMMs,
// the parallel loop over hidden units, and the gathering of each step's previous state.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"

namespace fastrnn {
namespace cpu {

// The walk over packed time: step s visits time t = reverse ? T-1-s : s, whose rows are
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
  int64_t rows(int64_t s) const { return batch_[time(s)]; }
  int64_t first_row(int64_t s) const { return offset_[time(s)]; }

 private:
  int64_t time(int64_t s) const { return reverse_ ? steps() - 1 - s : s; }
  bool reverse_;
  std::vector<int64_t> batch_, offset_;
};

// dst[first : first + rows] = src[0 : rows], both contiguous with equal row widths.
inline void copy_rows(const at::Tensor& dst, int64_t first, const at::Tensor& src, int64_t rows) {
  const size_t row_bytes = src.size(1) * src.element_size();
  std::memcpy(static_cast<char*>(dst.data_ptr()) + first * row_bytes, src.data_ptr(),
              rows * row_bytes);
}

// Calls fn(row, col_begin, col_end) over [0, rows) x [0, cols), split across threads
// when there is enough work to pay for it.
template <typename F>
void for_each_unit(int64_t rows, int64_t cols, const F& fn) {
  constexpr int64_t kUnitsPerTask = 16384;
  at::parallel_for(0, rows * cols, kUnitsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end;) {
      const int64_t row = idx / cols, col = idx % cols;
      const int64_t col_end = std::min(cols, col + (end - idx));
      fn(row, col, col_end);
      idx += col_end - col;
    }
  });
}

// For every step s, the state each of its rows held before s: rows active at the previous
// step take that step's row of `states`, rows that start at s take `init`.
// states: [N, X] (row stride may exceed X), init: [B, X]; returns [N, X] contiguous.
inline at::Tensor previous_states(const at::Tensor& states, const at::Tensor& init,
                                  const Schedule& schedule) {
  auto out = at::empty({states.size(0), states.size(1)}, states.options());
  const int64_t X = states.size(1), stride = states.stride(0);
  const auto init_c = init.contiguous();
  const size_t row_bytes = X * states.element_size();
  const auto* src = static_cast<const char*>(states.data_ptr());
  const auto* src_init = static_cast<const char*>(init_c.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  const size_t elem = states.element_size();
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    const int64_t carried = s == 0 ? 0 : std::min(b, schedule.rows(s - 1));
    const int64_t prev_first = s == 0 ? 0 : schedule.first_row(s - 1);
    for (int64_t i = 0; i < b; ++i) {
      const char* from = i < carried ? src + (prev_first + i) * stride * elem
                                     : src_init + i * X * elem;
      std::memcpy(dst + (first + i) * X * elem, from, row_bytes);
    }
  }
  return out;
}

}  // namespace cpu
}  // namespace fastrnn
