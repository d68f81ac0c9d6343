#pragma once
// The clockwork walk fused (float and double): one parallel region for the whole walk, the
// allowed blocks of w_hh packed once into panels (panel_gemm.h) that each thread keeps in
// its cache, as the fused walks of fused_walk.h. The threads split each module's units
// alike (a slice [j0, j1) of [0, k) in every module, so that every step's active modules
// are shared out evenly) and meet at a barrier once per step, or split the rows
// (fused_split.h). Each step also forms its active modules' input products, from x and the
// rows of w_ih packed into the same panels, and backward the input's gradient, from w_ih
// packed by columns. Modules as clockwork_walk.h's walks; backward writes each module's gate
// gradients transposed, grad_gx_t[i] [k, n_i] with rows transposed_gate_stride(n_i) apart
// (clockwork_walk.h's grad_gx[i] is [n_i, k]), and clockwork_fused_weight_grads forms the
// weights' gradients from them.

#include <vector>

#include "clockwork_walk.h"
#include "fused_split.h"

namespace fastrnn {
namespace cpu {

// The layer's input side as the fused walks read it: x [N, I], w_ih [H, I], bias [H] or
// null, forming the input products step by step; or, where x is null, gx[i], module i's
// input products formed before the walk ([n_i, k], its active steps' rows in step order).
// Backward writes grad_x [N, I] unless it is null.
template <typename T>
struct ClockworkInput {
  const T *x, *w_ih, *bias;
  const T* const* gx;
  T* grad_x;
  int64_t I;
};

// The row stride of grad_gx_t[i] [k, n_i] (backward's gate gradients of module i,
// transposed): n_i rounded up to 16 elements and 16 more, so that a block's rows do not lie
// a multiple of 4 KB apart (n_i = T*B / period is often a power of two, and such rows share
// the L1's sets). The weight gradients' product of module 0 at T256 B32 k64, one thread,
// AMD EPYC: 80-87 GFLOP/s with a stride of n_i, 91-98 padded; the backward op 1-2% faster.
constexpr int64_t transposed_gate_stride(int64_t n) { return (n + 15) / 16 * 16 + 16; }

// Where each module's panels start: forward, module i's panels over K = I + H - i*k (w_ih's
// rows of its units, then the columns of w_hh it reads), one per chunk of W of its units;
// backward, module m's panels over K = (m+1)*k (the units of the modules that read its
// columns), one per chunk of W of its columns, module i's units at rows [i*k, (i+1)*k) of
// it.
struct ClockworkPanels {
  int64_t I, H, k, W, chunks;  // chunks: ceil(k / W) per module
  int64_t forward_depth(int64_t i) const { return I + H - i * k; }
  int64_t backward_depth(int64_t m) const { return (m + 1) * k; }
  int64_t forward(int64_t i, int64_t p) const {  // sum over i' < i of chunks*W*(I + H - i'k)
    return (chunks * W) * (i * (I + H) - k * i * (i - 1) / 2) + p * forward_depth(i) * W;
  }
  int64_t backward(int64_t m, int64_t p) const {  // sum over m' < m of chunks * W * (m'+1)k
    return (chunks * W) * (k * m * (m + 1) / 2) + p * backward_depth(m) * W;
  }
  // g modules' panels: forward's, or backward's with I = 0 (the same size then)
  int64_t size(int64_t g) const { return forward(g, 0); }
};

// Backward's panels of w_ih's columns: one per chunk of W of the I inputs, over K = H (every
// unit, in order). A walk's thread that owns unit chunks [p0, p1) of each module owns input
// chunks [first(p0), first(p1)): the same share of them.
struct ClockworkInputPanels {
  int64_t I, H, k, W;
  int64_t chunks() const { return (I + W - 1) / W; }
  int64_t first(int64_t unit_chunk) const {
    return unit_chunk * chunks() / ((k + W - 1) / W);
  }
  int64_t offset(int64_t q) const { return q * H * W; }
  int64_t size() const { return chunks() * H * W; }
};

// Calls fn(i, i_end) for each run [i, i_end) of consecutive modules active at step s among
// modules [0, end) (with periods that divide each other, one run from module 0).
template <typename F>
void for_each_active_run(const ClockworkModules& m, int64_t s, int64_t end, const F& fn) {
  for (int64_t i = 0, i_end; i < end; i = i_end) {
    for (i_end = i + 1; m.active(i, s) && i_end < end && m.active(i_end, s);) ++i_end;
    if (m.active(i, s)) fn(i, i_end);
  }
}

// clockwork_forward fused: w: [H, H] contiguous; st.gx is not read (in's input side is).
template <class Cell, typename T>
void clockwork_fused_forward(const ForwardState<T>& st, const Schedule& schedule,
                             const T* w, const ClockworkModules& m, const ClockworkInput<T>& in,
                             FusedSplit split) {
  constexpr int64_t W = kPanelWidth<T>;
  const int64_t H = st.H, k = m.k, g = m.count(), I = in.x ? in.I : 0;
  const ClockworkPanels layout{I, H, k, W, (k + W - 1) / W};
  std::vector<T> panels(layout.size(g)), zeros(H, T(0));
  std::vector<T> pre(st.B * H);  // active modules' rows: the products and the bias
  const T* bias = in.bias ? in.bias : zeros.data();
  const auto pack = [&](int64_t p) {
    for (int64_t i = 0; i < g; ++i) {
      T* panel = panels.data() + layout.forward(i, p);
      const auto unit = [&](int64_t c) { return p * W + c < k ? i * k + p * W + c : -1; };
      if (I > 0) {
        pack_panel(panel, I, 1, [&](int64_t c) -> const T* {
          return unit(c) < 0 ? nullptr : in.w_ih + unit(c) * I;
        });
      }
      pack_panel(panel + I * W, H - i * k, 1, [&](int64_t c) -> const T* {
        return unit(c) < 0 ? nullptr : w + unit(c) * H + i * k;
      });
    }
  };
  const auto units = forward_units_for<Cell, T>(false, false);
  run_split_walk(split, st.B, k, W, pack, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                              int64_t r_end, const auto& sync) {
    std::vector<const T*> h_prev(r_end);
    std::vector<int64_t> next(g, 0);  // module i's next row of in.gx[i]
    const T *x_rows[kMaxPanelRows], *h_rows[kMaxPanelRows];
    T out[kMaxPanelRows * W];
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, b);
      // h_prev from y (or h0): rows of the h state are being updated by other threads.
      for (int64_t r = r_begin; r < r_last; ++r) {
        h_prev[r] = previous_row(st.y, H, st.h0, schedule, s, r, H);
      }
      for (int64_t i = 0; i < g; ++i) {
        const int64_t u0 = i * k + j0, u1 = i * k + j1;
        if (!m.active(i, s)) {  // keeps its value
          for (int64_t r = r_begin; r < r_last; ++r) {
            std::memcpy(st.y + (first + r) * H + u0, h_prev[r] + u0, (u1 - u0) * sizeof(T));
          }
          continue;
        }
        for (int64_t p = j0 / W; p * W < j1; ++p) {  // a panel stays in L1 over the rows
          const int64_t columns = std::min(W, k - p * W), c0 = i * k + p * W;
          const T* panel = panels.data() + layout.forward(i, p);
          for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
            const int64_t r0 = r_begin + block;
            for (int r = 0; r < n; ++r) {
              x_rows[r] = in.x ? in.x + (first + r0 + r) * I : nullptr;
              h_rows[r] = h_prev[r0 + r] + i * k;
            }
            const PanelSpan<T> spans[] = {{h_rows, panel + I * W, H - i * k}, {x_rows, panel, I}};
            panel_product(n, spans, in.x ? 2 : 1, out);
            for (int r = 0; r < n; ++r) {
              T* dst = pre.data() + (r0 + r) * H + c0;
              const T* add = in.x ? bias + c0 : in.gx[i] + (next[i] + r0 + r) * k + p * W;
              for (int64_t c = 0; c < columns; ++c) dst[c] = out[r * W + c] + add[c];
            }
          });
        }
        for (int64_t r = r_begin; r < r_last; ++r) {
          T* h = st.h + r * H;
          units(pre.data() + r * H, zeros.data(), nullptr, nullptr, h, nullptr, nullptr, h,
                st.y + (first + r) * H, H, u0, u1);
        }
        next[i] += b;
      }
      sync();
    }
  });
}

// clockwork_backward fused: w: [H, H] contiguous; st.grad_gx: [2, B, H] scratch, a step's
// gate gradients in half (s % 2), so that a thread still reading the last step's while
// another writes this step's reads the other half.
template <class Cell, typename T>
void clockwork_fused_backward(const BackwardState<T>& st, const Schedule& schedule,
                              const T* w, const ClockworkModules& m, const ClockworkInput<T>& in,
                              const std::vector<T*>& grad_gx_t, const std::vector<int64_t>& rows,
                              FusedSplit split) {
  constexpr int64_t W = kPanelWidth<T>;
  const int64_t H = st.H, k = m.k, g = m.count(), I = in.I;
  const ClockworkPanels layout{0, H, k, W, (k + W - 1) / W};
  const ClockworkInputPanels inputs{I, H, k, W};
  std::vector<T> panels(layout.size(g)), input_panels(in.grad_x ? inputs.size() : 0);
  const auto pack = [&](int64_t p) {
    for (int64_t c_module = 0; c_module < g; ++c_module) {
      pack_panel(panels.data() + layout.backward(c_module, p), layout.backward_depth(c_module),
                 H, [&](int64_t c) -> const T* {
                   const int64_t column = p * W + c;
                   return column < k ? w + c_module * k + column : nullptr;
                 });
    }
    for (int64_t q = inputs.first(p); in.grad_x && q < inputs.first(p + 1); ++q) {
      pack_panel(input_panels.data() + inputs.offset(q), H, I, [&](int64_t c) -> const T* {
        return q * W + c < I ? in.w_ih + q * W + c : nullptr;
      });
    }
  };
  run_split_walk(split, st.B, k, W, pack, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                              int64_t r_end, const auto& sync) {
    std::vector<int64_t> end = rows;  // module i's rows of grad_gx_t[i] not yet written
    // the thread's input chunks, none without grad_x
    const int64_t q0 = inputs.first(j0 / W);
    const int64_t q1 = in.grad_x ? inputs.first((j1 + W - 1) / W) : q0;
    const T* dx_rows[kMaxPanelRows];
    std::vector<const T*> run_rows(g * kMaxPanelRows);  // per run of active modules
    std::vector<PanelSpan<T>> runs;
    T out[kMaxPanelRows * W];
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, b);
      T* dx = st.grad_gx + (s % 2) * st.B * H;
      for (int64_t i = 0; i < g; ++i) {
        const int64_t u0 = i * k + j0, u1 = i * k + j1;
        if (!m.active(i, s)) {  // passes its gradient on unchanged
          for (int64_t r = r_begin; r < r_last; ++r) {
            T* dh = st.dh + r * H;
            const T* grad_y = st.grad_y + (first + r) * H;
            for (int64_t j = u0; j < u1; ++j) dh[j] += grad_y[j];
          }
          continue;
        }
        end[i] -= b;
        for (int64_t r = r_begin; r < r_last; ++r) {
          T* dh = st.dh + r * H;
          backward_units<Cell, true, T>(dh, st.grad_y + (first + r) * H, nullptr, nullptr,
                                        nullptr, nullptr, st.y + (first + r) * H, dx + r * H,
                                        nullptr, nullptr, H, u0, u1);
          std::fill(dh + u0, dh + u1, T(0));  // an active module's h_{t-1}: products only
        }
        for (int64_t j = j0; j < j1; ++j) {  // unit j's gradients: a run of grad_gx_t[i]'s row j
          T* g = grad_gx_t[i] + j * transposed_gate_stride(rows[i]) + end[i];
          for (int64_t r = r_begin; r < r_last; ++r) g[r] = dx[r * H + i * k + j];
        }
      }
      sync();  // by units: every active unit's gradient of this step is written
      // dh[:, columns of module c] += dx[:, units of module i] @ w_hh[those units, those
      // columns], for each active module i reading them (i <= c): one product per run of
      // consecutive active modules [i, i_end), whose units are consecutive rows of the
      // panel.
      for (int64_t c_module = 0; c_module < g; ++c_module) {
        for (int64_t p = j0 / W; p * W < j1; ++p) {
          const int64_t columns = std::min(W, k - p * W);
          for_each_active_run(m, s, c_module + 1, [&](int64_t i, int64_t i_end) {
            const T* panel = panels.data() + layout.backward(c_module, p) + i * k * W;
            for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
              const int64_t r0 = r_begin + block;
              for (int r = 0; r < n; ++r) dx_rows[r] = dx + (r0 + r) * H + i * k;
              panel_product(n, dx_rows, panel, (i_end - i) * k, out);
              for (int r = 0; r < n; ++r) {
                T* dh = st.dh + (r0 + r) * H + c_module * k + p * W;
                for (int64_t c = 0; c < columns; ++c) dh[c] += out[r * W + c];
              }
            });
          });
        }
      }
      // grad_x[rows of the step, inputs of chunk q] = dx[:, active units] @ w_ih[those
      // units, those inputs]: one span of depth per run of consecutive active modules (zero
      // where none is active).
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t columns = std::min(W, I - q * W);
        const T* panel = input_panels.data() + inputs.offset(q);
        for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
          const int64_t r0 = r_begin + block;
          runs.clear();
          for_each_active_run(m, s, g, [&](int64_t i, int64_t i_end) {
            const T** a = run_rows.data() + runs.size() * kMaxPanelRows;
            for (int r = 0; r < n; ++r) a[r] = dx + (r0 + r) * H + i * k;
            runs.push_back({a, panel + i * k * W, (i_end - i) * k});
          });
          if (runs.empty()) {
            std::fill(out, out + n * W, T(0));
          } else {
            panel_product(n, runs.data(), static_cast<int>(runs.size()), out);
          }
          for (int r = 0; r < n; ++r) {
            std::memcpy(in.grad_x + (first + r0 + r) * I + q * W, out + r * W,
                        columns * sizeof(T));
          }
        });
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastrnn
