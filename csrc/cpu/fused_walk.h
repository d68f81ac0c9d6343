#pragma once
// The fused walks (float, double, and bfloat16 where panel_operands.h has its kernel; no
// projection): one parallel region for the whole walk over time, the recurrent weight
// packed once into panels (panel_gemm.h) that each thread keeps in its cache, the threads
// splitting the units or the rows (fused_split.h; a row-wise cell's rows only, so that a
// thread has a whole row's product before its gate loops). The products multiply in M
// (panel_operands.h): T, or bfloat16 for a float walk; bfloat16 operands in bfloat16
// pairs with float sums, others in panel_gemm.h's panels; the sums (Operands::Sum) are
// stored in T. w_hh: [G*H, H] in M. Shapes and buffers: walk_state.h; here P = H.

#include "fused_split.h"
#include "panel_operands.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {

// convert_row of n <= N sums, as a copy of N known at compile time where n == N (a vector
// move or two, inlined, where a copy of run-time length is a call into libc: 2048 of them
// per step and thread at B32 H256, a fifth of the float LSTM's step there).
template <int64_t N, typename S, typename D>
inline void store_sums(const S* src, D* dst, int64_t n) {
  if (n == N) {
    convert_row(src, dst, N);
  } else {
    convert_row(src, dst, n);
  }
}

// Forward. Unit group u holds V units (V = W/2 for an even gate count, else W, so that a
// gate's units never straddle a panel) and Q = G*V/W panels over K = H: panel p holds
// columns q in [p*W, (p+1)*W) of the group, column q being gate q / V of unit u*V + q % V.
// The gate loops run over at least U units at a time, 64 bytes of T: per call the loop
// has a fixed cost, and 8 bfloat16 units ran unvectorised (1.7x slower walks). Measured
// against 32 bytes, in-process interleaved, 2 threads, AMD EPYC, ms: float LSTM inference
// T200 B32 I100 H256 29.7 vs 31.2, T100 B64 I=H=512 148-155 vs 152-155; under bfloat16
// autocast 15.8 vs 16.9, 74.7-75.9 vs 78.0-78.5 (U = 32 floats measured slower: 32.5).
// With st.x (M = T) the products add each step's x rows times w_ih, packed into panels
// of the same columns over K = I, to the h rows' (two spans of one panel product), and the
// gate loops read the input bias as every row's gx: the input product is never written out
// and read back. Against the input product as its own op before the walk (LSTM inference,
// 2 threads, AMD EPYC, float32, in-process interleaved, median of 9, ms): T200 B32 I100 H256
// 28.4 vs 25.4, I1 22.8 vs 19.5; T100 B32 I=H=128 5.37 vs 4.91, B128 (rows split) 24.7 vs
// 20.6; T100 B64 I=H=512 137 vs 131; T100 B32 I512 H64 6.41 vs 5.98. In bfloat16 (autocast
// inference; builds alternated in 3 process pairs, ratio to torch.nn's time in the same
// process): T100 B64 I=H=512 1.07-1.08 vs 1.00-1.03, T200 B32 I100 H256 1.12-1.13 vs
// 1.04-1.06.
// gh: [B, G*H] scratch.
template <class Cell, typename T, typename M>
void fused_forward(const ForwardState<T>& st, const M* w_hh, const Schedule& schedule, T* gh,
                   FusedSplit split) {
  using Operands = PanelOperands<T, M>;
  using Sum = typename Operands::Sum;
  constexpr int64_t G = Cell::kGates, S = Cell::kSaved, W = Operands::kWidth;
  constexpr int64_t V = G % 2 == 0 ? W / 2 : W, Q = G * V / W, U = 64 / sizeof(T);  // U >= V
  const int64_t H = st.H, groups = (H + V - 1) / V, depth = Operands::depth(H);
  constexpr bool kFolds = std::is_same_v<T, M>;  // x rows as operands as they are
  TORCH_INTERNAL_ASSERT(kFolds || st.x == nullptr, "input rows need operands in T");
  const int64_t I = st.x != nullptr ? st.I : 0;  // 0: gx given
  const int64_t gx_stride = I > 0 ? 0 : G * H, input_depth = Operands::depth(I);
  const auto options = at::CPU(c10::CppTypeToScalarType<M>::value);
  at::Tensor panels_t = at::empty({groups * Q * depth * W}, options);
  at::Tensor input_panels_t = at::empty({groups * Q * input_depth * W}, options);
  M* panels = panels_t.data_ptr<M>();
  M* input_panels = input_panels_t.data_ptr<M>();
  // Panel p of unit group u of weight [G*H, K] (w_hh or w_ih) into dst.
  const auto pack = [&](M* dst, const M* weight, int64_t K, int64_t u, int64_t p) {
    Operands::pack(dst, K, 1, [&](int64_t c) -> const M* {
      const int64_t q = p * W + c, unit = u * V + q % V, gate = q / V;
      return unit < H ? weight + (gate * H + unit) * K : nullptr;
    });
  };
  const auto pack_group = [&](int64_t u) {
    for (int64_t p = 0; p < Q; ++p) {
      pack(panels + (u * Q + p) * depth * W, w_hh, H, u, p);
      if constexpr (kFolds) {
        if (I > 0) pack(input_panels + (u * Q + p) * input_depth * W, st.w_ih, I, u, p);
      }
    }
  };
  const auto units = forward_units_for<Cell, T>(st.saved != nullptr, st.b_hh != nullptr);
  run_split_walk(split, st.B, H, V, pack_group, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                                    int64_t r_end, const auto& sync) {
    StepRows<T, M> h_prev(r_end, H), x(I > 0 ? r_end : 0, I);
    const M* rows[kMaxPanelRows];
    const M* x_rows[kMaxPanelRows];
    Sum out[kMaxPanelRows * Q * W];  // per row: the G gates of V units
    // The gate loops of units [u0, u1) of the step's rows [r_begin, r_last).
    const auto gates = [&](int64_t first, int64_t r_begin, int64_t r_last, int64_t u0,
                           int64_t u1) {
      for (int64_t r = r_begin; r < r_last; ++r) {
        const int64_t packed = first + r;
        units(st.gx + packed * gx_stride, gh + r * G * H, st.b_hh, st.unit_params, st.h + r * H,
              Cell::kCellState ? st.carry + r * H : nullptr,
              st.saved != nullptr ? st.saved + packed * S * H : nullptr, st.h + r * H,
              st.y + packed * H, H, u0, u1);
      }
    };
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, schedule.rows(s));
      // h_prev from y (or h0): rows of the h state are being updated by other threads.
      h_prev.load(r_begin, r_last, [&](int64_t r) {
        return previous_row(st.y, H, st.h0, schedule, s, r, H);
      });
      if (I > 0) x.load(r_begin, r_last, [&](int64_t r) { return st.x + (first + r) * I; });
      // Unit group by unit group, so that the group's panels stay in L1 over the rows.
      [[maybe_unused]] int64_t gates_from = j0;  // the first unit whose gates are still to run
      for (int64_t u = j0 / V; u * V < j1; ++u) {
        const int64_t u0 = u * V, u1 = std::min(H, u0 + V);
        for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
          const int64_t r0 = r_begin + block;
          for (int r = 0; r < n; ++r) rows[r] = h_prev.row(r0 + r);
          for (int r = 0; r < n && I > 0; ++r) x_rows[r] = x.row(r0 + r);
          const ProductSpan<M> spans[2] = {{x_rows, input_panels + u * Q * input_depth * W, I},
                                           {rows, panels + u * Q * depth * W, H}};
          Operands::products(n, spans + (I > 0 ? 0 : 1), I > 0 ? 2 : 1, Q, out);
          for (int r = 0; r < n; ++r) {
            for (int64_t gate = 0; gate < G; ++gate) {
              const int64_t q = gate * V;
              const Sum* src = out + (q / W) * n * W + r * W + q % W;
              store_sums<V>(src, gh + (r0 + r) * G * H + gate * H + u0, u1 - u0);
            }
          }
        });
        if constexpr (!Cell::kRowWise) {
          if (u1 - gates_from >= U || u1 >= j1) {
            gates(first, r_begin, r_last, gates_from, u1);
            gates_from = u1;
          }
        }
      }
      if constexpr (Cell::kRowWise) gates(first, r_begin, r_last, 0, H);  // rows whole
      sync();
    }
  });
}

// Backward. Column chunk k (W columns of w_hh [G*H, H]) is one panel over K = G*H. By
// units, a thread computes its units' gate gradients, and after the barrier its columns
// (the same units) of the next dh; by rows, both for its own rows.
template <class Cell, typename T, typename M>
void fused_backward(const BackwardState<T>& st, const M* w_hh, const Schedule& schedule,
                    FusedSplit split) {
  using Operands = PanelOperands<T, M>;
  using Sum = typename Operands::Sum;
  constexpr int64_t G = Cell::kGates, S = Cell::kSaved, W = Operands::kWidth;
  const int64_t H = st.H, chunks = (H + W - 1) / W, K = G * H, depth = Operands::depth(K);
  at::Tensor panels_t =
      at::empty({chunks * depth * W}, at::CPU(c10::CppTypeToScalarType<M>::value));
  M* panels = panels_t.data_ptr<M>();
  const auto pack_chunk = [&](int64_t k) {
    Operands::pack(panels + k * depth * W, K, H, [&](int64_t c) -> const M* {
      return k * W + c < H ? w_hh + k * W + c : nullptr;
    });
  };
  run_split_walk(split, st.B, H, W, pack_chunk, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                                    int64_t r_end, const auto& sync) {
    StepRows<T, M> dgh(r_end, K);  // the step's gradients w.r.t. gh
    const M* rows[kMaxPanelRows];
    Sum out[kMaxPanelRows * W];
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, schedule.rows(s));
      for (int64_t r = r_begin; r < r_last; ++r) {
        const int64_t packed = first + r;
        backward_units<Cell, true, T>(
            st.dh + r * H, st.grad_y + packed * H,
            Cell::kBackwardCarry ? st.carry + r * H : nullptr, st.saved + packed * S * H,
            st.unit_params, backward_prev<Cell>(st, schedule, s, r), st.y + packed * H,
            st.grad_gx + packed * K, st.grad_gh + packed * K, params_grad_row<Cell>(st, r),
            H, j0, j1);
      }
      sync();  // by units: every unit's gate gradients of this step are written
      dgh.load(r_begin, r_last, [&](int64_t r) { return st.grad_gh + (first + r) * K; });
      for (int64_t k = j0 / W; k * W < j1; ++k) {  // a panel stays in L1 over the rows
        for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
          const int64_t r0 = r_begin + block;
          for (int r = 0; r < n; ++r) rows[r] = dgh.row(r0 + r);
          const ProductSpan<M> span{rows, panels + k * depth * W, K};
          Operands::products(n, &span, 1, 1, out);
          const int64_t columns = std::min(W, H - k * W);
          for (int r = 0; r < n; ++r) {
            store_sums<W>(out + r * W, st.dh + (r0 + r) * H + k * W, columns);
          }
        });
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastrnn
