#pragma once
// The products of a single step's backward (a cell call, cell_ops.h) in one parallel region.
// From grad_gx and grad_gh ([B, G*H], the gradients w.r.t. the step's input-side and
// recurrent pre-activations; one tensor for most cells):
//   grad_x    = grad_gx @ w_ih      [B, I]
//   dh        = grad_gh @ w_hh      [B, H]    (the part of h0's gradient through w_hh)
//   grad_w_ih = grad_gx^T @ x       [G*H, I]
//   grad_w_hh = grad_gh^T @ h0      [G*H, H]
// and the biases' gradients, sums of grad_gx's and grad_gh's rows.
// Each thread forms its block of columns of the first two (the blocks StepGemm gives it) and its
// block of rows of the last two (outer_products.h), with the kernels four parallel regions of a few
// microseconds each ran, at which the threads met four times a step. cell_backward, 2 threads, AMD
// EPYC, float32, alternated in one process, median of 21, us, four regions vs one: RNN B1 H64 31.6
// vs 28.0 (one thread either way), B16 H128 47.8 vs 41.5, B8 H256 73.8 vs 67.2, B32 H256 124 vs
// 117; LSTM B8 H128 62.5 vs 59.1, B32 H256 411 vs 400 (491 vs 494 in a noisier run); GRU B32 H256
// 322 vs 311.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "gemm.h"
#include "outer_products.h"
#include "subnormals.h"

namespace fastrnn {
namespace cpu {

// Whether a step of B rows, with G*H = GH gates and widths I (x) and H (h0), takes the
// single region: up to StepGemm's row kernels' limit of rows, where each product splits
// into column blocks (more rows go to BLAS, with its own threads), and up to 2^19 weight
// elements (w_ih's and w_hh's together, 2 MB of float). Larger weights ran 1-2% slower so
// (LSTM B16 H512, B32 H512, RNN B32 H1024: alternated in one process, medians of 21).
// The build must have the row kernels (row_products.h; without them the weight gradients
// stay with BLAS).
inline bool takes_step_products(int64_t B, int64_t GH, int64_t I, int64_t H) {
  constexpr int64_t kMaxRows = StepGemm<float>::kMaxRowProductRows;
  return kRowProductKernels && B > 0 && B <= kMaxRows && GH * (I + H) <= (int64_t{1} << 19);
}

// Pointers to the operands and results, all contiguous; a null result is not formed.
// grad_b_ih [G*H] sums grad_gx's rows; grad_b_hh [G*H] grad_gh's where recurrent_bias (a
// cell that adds b_hh to the recurrent product alone), else grad_gx's too. With
// add_to_sums, the weights' and biases' results hold sums of earlier steps' gradients,
// and this step's are added to them (as autograd would add them: the same bits).
template <typename T>
struct StepProducts {
  int64_t B, GH, I, H;  // rows; G*H; x's and h0's widths
  const T *grad_gx, *grad_gh, *x, *h0;
  T *grad_x, *dh, *grad_w_ih, *grad_w_hh, *grad_b_ih, *grad_b_hh;
  bool recurrent_bias, add_to_sums;
};

// out[j] = sum over rows b < B of rows[b * ld + j], for j in [j0, j1), the rows in order;
// with add, out[j] + that sum.
template <typename T>
void sum_rows(int64_t B, const T* rows, int64_t ld, T* out, int64_t j0, int64_t j1, bool add) {
  constexpr int64_t kChunk = 256;
  for (int64_t c0 = j0; c0 < j1; c0 += kChunk) {
    const int64_t width = std::min(kChunk, j1 - c0);
    T sums[kChunk] = {};
    for (int64_t b = 0; b < B; ++b) {
      const T* row = rows + b * ld + c0;
      for (int64_t j = 0; j < width; ++j) sums[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) out[c0 + j] = add ? out[c0 + j] + sums[j] : sums[j];
  }
}

// input: StepGemm(w_ih), recurrent: StepGemm(w_hh), both shares(); the sizes as
// takes_step_products takes.
template <typename T>
void step_backward_products(const StepProducts<T>& p, const StepGemm<T>& input,
                            const StepGemm<T>& recurrent) {
  const auto part = [&](int64_t t, int64_t parts) {
    if (p.grad_x != nullptr) input.share(p.B, p.grad_gx, p.grad_x, t, parts);
    if (p.dh != nullptr) recurrent.share(p.B, p.grad_gh, p.dh, t, parts);
    if (p.grad_w_ih == nullptr) return;
    // As transposed_product (recurrence.h), flushed also on one thread: no BLAS below.
    const FlushSubnormals flush(AT_PARALLEL_OPENMP);
    const auto [r0, r1] = outer_rows_share(p.GH, t, parts);
    const bool add = p.add_to_sums;
    sum_of_outer_products(p.B, p.I, p.grad_gx, p.GH, p.x, p.I, p.grad_w_ih, p.I, r0, r1, add);
    sum_of_outer_products(p.B, p.H, p.grad_gh, p.GH, p.h0, p.H, p.grad_w_hh, p.H, r0, r1, add);
    if (p.grad_b_ih == nullptr) return;
    sum_rows(p.B, p.grad_gx, p.GH, p.grad_b_ih, r0, r1, add);
    if (p.recurrent_bias || add) {
      sum_rows(p.B, p.recurrent_bias ? p.grad_gh : p.grad_gx, p.GH, p.grad_b_hh, r0, r1, add);
    } else {
      std::copy(p.grad_b_ih + r0, p.grad_b_ih + r1, p.grad_b_hh + r0);
    }
  };
  // One thread where neither StepGemm nor the outer products (transposed_product, from
  // SerialBlas's limit) would split the larger weight's products.
  const int64_t larger = p.GH * std::max(p.I, p.H);
  const bool small = larger < StepGemm<T>::kMinWeightToSplit &&
                     p.B * larger < SerialBlas::kMaxMultiplyAdds;
  const int64_t threads = at::in_parallel_region() || small ? 1 : at::get_num_threads();
  if (threads == 1) return part(0, 1);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush(AT_PARALLEL_OPENMP);
    for (int64_t t = begin; t < end; ++t) part(t, threads);
  });
}

}  // namespace cpu
}  // namespace fastrnn
