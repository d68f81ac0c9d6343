#pragma once
// Pieces every CPU recurrence shares: the walk over packed time steps, per-step GEMMs,
// the parallel loop over hidden units, and the gathering of each step's previous state.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/schedule.h"
#include "gemm.h"

namespace fastrnn {
namespace cpu {

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

// Row i of the state step s read: row i of step s-1 in `states` ([N, X], row stride
// `stride`) when that step had the row, else row i of `init` ([B, X], contiguous).
template <typename T>
const T* previous_row(const T* states, int64_t stride, const T* init, const Schedule& schedule,
                      int64_t s, int64_t i, int64_t X) {
  const int64_t row = previous_packed_row(schedule.step(s), i);
  return row >= 0 ? states + row * stride : init + i * X;
}

// grad^T @ h_prev, the recurrent weight's gradient: grad: [N, G] w.r.t. each step's
// h_prev @ w_hh^T; h_prev of a step's rows is the previous step's rows of y ([N, P]) or
// h0 ([B, P]). A dense sequence needs no gathering: two GEMMs on views of y and h0.
inline at::Tensor recurrent_weight_grad(const at::Tensor& grad, const at::Tensor& y,
                                        const at::Tensor& h0, const Schedule& schedule,
                                        bool reverse) {
  if (schedule.dense()) return recurrent_weight_grad_dense(grad, y, h0, reverse);
  const auto init = h0.contiguous();
  at::Tensor h_prev = at::empty_like(y);  // [N, P]
  const int64_t P = y.size(1);
  const size_t row_bytes = P * y.element_size();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "h_prev", [&] {
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      for (int64_t i = 0; i < schedule.rows(s); ++i) {
        std::memcpy(h_prev.data_ptr<scalar_t>() + (schedule.first_row(s) + i) * P,
                    previous_row(y.data_ptr<scalar_t>(), P, init.data_ptr<scalar_t>(), schedule,
                                 s, i, P),
                    row_bytes);
      }
    }
  });
  return at::mm(grad.t(), h_prev);
}

}  // namespace cpu
}  // namespace fastrnn
