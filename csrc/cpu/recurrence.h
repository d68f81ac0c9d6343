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
#include "outer_products.h"
#include "subnormals.h"
#include "walk_state.h"

namespace fastrnn {
namespace cpu {

// The least work (in units of a one-gate cell) worth a thread's task in a gate pass.
constexpr int64_t kUnitsPerTask = 16384;

// Calls fn(row, col_begin, col_end) over [0, rows) x [0, cols), split across threads
// when there is enough work to pay for it: units_per_task units a task at least.
template <typename F>
void for_each_unit(int64_t rows, int64_t cols, const F& fn,
                   int64_t units_per_task = kUnitsPerTask) {
  at::parallel_for(0, rows * cols, units_per_task, [&](int64_t begin, int64_t end) {
    const FlushSubnormals flush;
    for (int64_t idx = begin; idx < end;) {
      const int64_t row = idx / cols, col = idx % cols;
      const int64_t col_end = std::min(cols, col + (end - idx));
      fn(row, col, col_end);
      idx += col_end - col;
    }
  });
}

// for_each_unit for Cell's gate loops: a row-wise cell's rows are never split; a unit's
// work grows with its gates (an LSTM's five activations against an RNN's one), so a task
// takes kUnitsPerTask / G units. Cell calls at B32 H256 (8192 units), 2 threads, AMD EPYC,
// builds alternated over 10 processes, us, fastest run: LSTMCell forward 224 -> 221,
// forward and backward 684 -> 660; GRUCell forward 170 -> 167 (medians 10-12% lower, noisy).
template <class Cell, typename F>
void for_each_unit_of(int64_t rows, int64_t cols, const F& fn) {
  if constexpr (Cell::kRowWise) {
    const int64_t grain = std::max<int64_t>(1, kUnitsPerTask / std::max<int64_t>(1, cols));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      const FlushSubnormals flush;
      for (int64_t row = begin; row < end; ++row) fn(row, int64_t{0}, cols);
    });
  } else {
    for_each_unit(rows, cols, fn, kUnitsPerTask / Cell::kGates);
  }
}

// [N, H]: each row's h before projection (Cell::hidden_from_saved, or a row-wise cell's
// hidden_row), from saved: [N, S*H] and unit_params: [K*H] (or undefined).
template <class Cell>
at::Tensor hidden_from_saved(const at::Tensor& saved, const at::Tensor& unit_params,
                             int64_t H) {
  at::Tensor m = at::empty({saved.size(0), H}, saved.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, saved.scalar_type(), "hidden", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* sv = saved.data_ptr<scalar_t>();
    scalar_t* m_p = m.data_ptr<scalar_t>();
    if constexpr (Cell::kRowWise) {
      const scalar_t* params = unit_params.data_ptr<scalar_t>();
      for_each_unit_of<Cell>(saved.size(0), H, [&](int64_t row, int64_t, int64_t) {
        Cell::template hidden_row<A>(SerialRow{}, sv + row * Cell::kSaved * H, params,
                                     m_p + row * H, H);
      });
    } else {
      for_each_unit(saved.size(0), H, [&](int64_t row, int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j) {  // once per backward with projection: left scalar
          A slots[Cell::kSaved];
          for (int q = 0; q < Cell::kSaved; ++q) slots[q] = A(sv[(row * Cell::kSaved + q) * H + j]);
          m_p[row * H + j] = Cell::hidden_from_saved(slots);
        }
      });
    }
  });
  return m;
}

// out = a @ b for a [M, K] that is the transpose of a [K, M] matrix, as a weight's gradient
// from a step's rows is (grad_gates^T @ x), in float or double, K <= kMaxOuterDepth:
// outer_products.h's kernel, the threads splitting out's rows in whole row blocks from
// SerialBlas's bound (below, waking a thread costs more); false where it does not apply (then
// at::mm). Against MKL (K > 16) or the row kernels (K <= 16: rows_times on a's copy) before,
// fwd+bwd, 2 threads, AMD EPYC, builds alternated, median us: LSTMCell B32 H256 749 -> 724,
// B1 H64 121 -> 121; RNNCell B32 H1024 2588 -> 2510, B128 H1024 10797 -> 9510; GRUCell B32
// H256 674 -> 635; a loop of 100 LSTMCell calls at B32 H256 89.1 -> 79.2 ms.
inline bool transposed_product(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const auto dtype = a.scalar_type();
  if (!kRowProductKernels || (dtype != at::kFloat && dtype != at::kDouble) ||
      b.scalar_type() != dtype || K > kMaxOuterDepth) {
    return false;
  }
  // [K, M] (a view where a is the transpose of a contiguous matrix) and [K, N]
  const at::Tensor a_rows = a.t().contiguous(), b_rows = b.contiguous();
  AT_DISPATCH_FLOATING_TYPES(dtype, "transposed_product", [&] {
    const scalar_t *pa = a_rows.data_ptr<scalar_t>(), *pb = b_rows.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const auto rows = [&](int64_t r0, int64_t r1) {
      const FlushSubnormals flush(AT_PARALLEL_OPENMP);
      sum_of_outer_products(K, N, pa, M, pb, N, po, N, r0, r1);
    };
    constexpr int64_t MR = kMaxPanelRows;
    const int64_t blocks = (M + MR - 1) / MR;
    if (M * N * K < SerialBlas::kMaxMultiplyAdds || at::in_parallel_region()) return rows(0, M);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      rows(b0 * MR, std::min(M, b1 * MR));
    });
  });
  return true;
}

// a @ b ([M, K] @ [K, N]) in a new [M, N] tensor from walk_buffer: a weight's gradient,
// which the caller gets back and frees, and which in a fresh allocation would take a page
// fault every 4 KB (LSTMCell, B1 H1024, fwd+bwd: 15.3 against 5.1 ms; the pool serves
// 1 MB and more, walk_state.h).
inline at::Tensor product_into_walk_buffer(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = walk_buffer({a.size(0), b.size(1)}, a.options());
  if (transposed_product(out, a, b)) return out;
  return at::mm_out(out, a, b);
}

// grad^T @ h_prev, the recurrent weight's gradient, from walk_buffer: grad: [N, G] w.r.t.
// each step's h_prev @ w_hh^T; h_prev of a step's rows is the previous step's rows of y
// ([N, P]) or h0 ([B, P]). A dense sequence needs no gathering: two GEMMs on views of y
// and h0.
inline at::Tensor recurrent_weight_grad(const at::Tensor& grad, const at::Tensor& y,
                                        const at::Tensor& h0, const Schedule& schedule,
                                        bool reverse) {
  if (!schedule.dense()) return product_into_walk_buffer(grad.t(), previous_rows(y, h0, schedule));
  if (y.size(0) == h0.size(0)) return product_into_walk_buffer(grad.t(), h0);  // one step
  return recurrent_weight_grad_dense(walk_buffer({grad.size(1), y.size(1)}, grad.options()),
                                     grad, y, h0, reverse);
}

}  // namespace cpu
}  // namespace fastrnn
