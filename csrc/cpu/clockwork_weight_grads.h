#pragma once
// The clockwork RNN's weight gradients on the CPU, from the fused walk's gate gradients
// (grad_gx_t[i] [k, n_i]: module i's, transposed, its active steps' rows in step order, its
// rows transposed_gate_stride(n_i) apart), reading x, h0 and y in place. Block (i, j >= i)
// of w_hh's gradient and module i's rows of w_ih's are sums over module i's active steps s
// of grad_gx_t[i][:, rows of s] @ (the states its rows read at s, or its rows of x)[:,
// columns]: panel_product's kernel, each step's rows a span of depth and the matrix read in
// place as its panel. This replaces a BLAS product per module over gathered rows, whose
// long operands BLAS copies again: T256 B32 I=H=256, periods 1, 2, 4, 8, 2 threads, AMD
// EPYC, about 130 GFLOP/s, 8 ms of the backward op's 15 (in-process shuffled, median of 21:
// the backward op 15.9 ms that way, 13.7 ms this way).

#include <ATen/Parallel.h>

#include <vector>

#include "../common/clockwork.h"
#include "clockwork_fused.h"  // transposed_gate_stride
#include "panel_gemm.h"

namespace fastrnn {
namespace cpu {

// Whether clockwork_fused_weight_grads takes these sizes: whole panels of columns only, and
// gradients ([H, I + H]) of at most 2 MB, which each step group adds to (periods 1, 2, 4, 8,
// T256, 2 threads, AMD EPYC, fwd+bwd, in-process shuffled, median of 7, ms, BLAS against
// this: B32 I=H=256 25.4 vs 22.3; B4 6.17 vs 5.75; B64 I=H=512 163 vs 146; B16 I128 H1024
// 73 vs 86).
template <typename T>
bool clockwork_weight_grads_fit(int64_t I, int64_t H, int64_t k) {
  constexpr int64_t kMaxGradientBytes = 2 << 20;
  return I % kPanelWidth<T> == 0 && k % kPanelWidth<T> == 0 &&
         H * (I + H) * int64_t(sizeof(T)) <= kMaxGradientBytes;
}

// Writes grad_w_ih [H, I] and the allowed blocks of grad_w_hh [H, H] (the others left as
// they are). x [N, I], h0 [B, H], y [N, H]: the forward's, contiguous.
template <typename T>
void clockwork_fused_weight_grads(const Schedule& schedule, const ClockworkModules& m,
                                  const std::vector<T*>& grad_gx_t,
                                  const std::vector<int64_t>& rows, const T* x, int64_t I,
                                  const T* h0, const T* y, int64_t H, T* grad_w_ih,
                                  T* grad_w_hh) {
  constexpr int64_t W = kPanelWidth<T>;
  // Steps per panel_product call, their rows' slice of x and the states staying in cache
  // over the thread's panels: as many as make kGroupRows rows, at most kSteps (one thread,
  // T256 B32 I256 k64, 8 steps a call: 82 GFLOP/s, one step: 50).
  constexpr int kSteps = 32;
  constexpr int64_t kGroupRows = 256;
  const int64_t k = m.k, input_panels = I / W;
  const int64_t threads = at::get_num_threads();
  at::parallel_for(0, threads, 1, [&](int64_t t_begin, int64_t t_end) {
    const T* a[kSteps][kMaxPanelRows];
    PanelSpan<T> spans[kSteps];
    T out[kMaxPanelRows * W];
    for (int64_t t = t_begin; t < t_end; ++t) {
      for (int64_t i = 0; i < m.count(); ++i) {
        // the thread's share of module i's column panels: w_ih's, then its w_hh block's
        const int64_t panels = input_panels + (H - i * k) / W;
        const int64_t p_begin = panels * t / threads, p_end = panels * (t + 1) / threads;
        const int64_t stride = transposed_gate_stride(rows[i]);
        int64_t steps[kSteps], offsets[kSteps];  // a group's steps, their rows' offset in i's
        bool first = true;
        const auto add_group = [&](int count) {
          for (int64_t q = p_begin; q < p_end; ++q) {
            const bool input = q < input_panels;
            const int64_t ld = input ? I : H;  // of x, or of h0 and y
            const int64_t column = input ? q * W : i * k + (q - input_panels) * W;
            T* dst = (input ? grad_w_ih + i * k * I : grad_w_hh + i * k * H) + column;
            for_each_row_block(k, [&](int64_t u0, int n) {
              for (int j = 0; j < count; ++j) {
                const int64_t s = steps[j];
                // step s's rows of x, or the states they read: h0 at step 0, else the rows
                // of the step before in y (a forward walk carries every row)
                const T* source = input ? x + schedule.first_row(s) * I
                                        : (s == 0 ? h0 : y + schedule.first_row(s - 1) * H);
                for (int r = 0; r < n; ++r) {
                  a[j][r] = grad_gx_t[i] + (u0 + r) * stride + offsets[j];
                }
                spans[j] = {a[j], source + column, schedule.rows(s), ld};
              }
              panel_product(n, spans, count, out);
              for (int r = 0; r < n; ++r) {
                T* d = dst + (u0 + r) * ld;
                for (int64_t c = 0; c < W; ++c) d[c] = (first ? T(0) : d[c]) + out[r * W + c];
              }
            });
          }
          first = false;
        };
        int count = 0;
        int64_t group_rows = 0;
        for (int64_t s = 0, row = 0; s < schedule.steps(); s += m.periods[i]) {
          steps[count] = s;
          offsets[count] = row;
          row += schedule.rows(s);
          group_rows += schedule.rows(s);
          if (++count == kSteps || group_rows >= kGroupRows) {
            group_rows = 0;
            add_group(count);
            count = 0;
          }
        }
        if (count > 0) add_group(count);  // every module is active at step 0: never none
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastrnn
