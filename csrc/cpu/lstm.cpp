// LSTM recurrence on the CPU: per step one recurrent product (plus one projection GEMM when
// proj_size > 0) and one fused pass over the gates; weight gradients as GEMMs after the loop.
// For batches up to 192 rows (forward) or 128 (backward), without projection, in float or
// double, the fused walk (fused_walk.h) does the steps; otherwise the BLAS walk, with one
// BLAS call and one parallel gate loop per step.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../cells/lstm.h"
#include "../common/checks.h"
#include "fused_walk.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using c10::optional;

// The gate loops over units [j0, j1) of one row, outside the dispatch macros so that the
// simd pragmas apply. Pointers are at the row's start.

// a_x, a_h: [4H] pre-activations; c: [H] state, updated; saved: [5H] = [i|f|g|o|c], written
// when kSave; h: [H].
template <bool kSave, typename scalar_t>
void lstm_forward_units(const scalar_t* a_x, const scalar_t* a_h, scalar_t* c, scalar_t* saved,
                        scalar_t* h, int64_t H, int64_t j0, int64_t j1) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    acc_t i, f, g, o, c_new, h_new;
    lstm::forward<acc_t>(acc_t(a_x[j]) + acc_t(a_h[j]), acc_t(a_x[H + j]) + acc_t(a_h[H + j]),
                         acc_t(a_x[2 * H + j]) + acc_t(a_h[2 * H + j]),
                         acc_t(a_x[3 * H + j]) + acc_t(a_h[3 * H + j]), acc_t(c[j]), i, f, g,
                         o, c_new, h_new);
    if constexpr (kSave) {
      saved[j] = i;
      saved[H + j] = f;
      saved[2 * H + j] = g;
      saved[3 * H + j] = o;
      saved[4 * H + j] = c_new;
    }
    c[j] = c_new;
    h[j] = h_new;
  }
}

// dh: [H] gradient w.r.t. h (plus grad_y: [H] when kAddGradY); dc: [H], replaced by the
// gradient w.r.t. c_prev; saved: [5H]; c_prev: [H]; da: [4H] pre-activation gradients.
template <bool kAddGradY, typename scalar_t>
void lstm_backward_units(const scalar_t* dh, const scalar_t* grad_y, scalar_t* dc,
                         const scalar_t* saved, const scalar_t* c_prev, scalar_t* da, int64_t H,
                         int64_t j0, int64_t j1) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    acc_t dh_total = dh[j];
    if constexpr (kAddGradY) dh_total += acc_t(grad_y[j]);
    acc_t dc_j = dc[j], da_i, da_f, da_g, da_o;
    lstm::backward<acc_t>(dh_total, dc_j, saved[j], saved[H + j], saved[2 * H + j],
                          saved[3 * H + j], saved[4 * H + j], c_prev[j], da_i, da_f, da_g, da_o);
    dc[j] = dc_j;
    da[j] = da_i;
    da[H + j] = da_f;
    da[2 * H + j] = da_g;
    da[3 * H + j] = da_o;
  }
}

// m = o * tanh(c) for every row, from saved: [N, 5H] -> [N, H].
Tensor lstm_hidden_from_saved(const Tensor& saved, int64_t H) {
  Tensor m = at::empty({saved.size(0), H}, saved.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, saved.scalar_type(), "lstm_hidden", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* sv = saved.data_ptr<scalar_t>();
    scalar_t* m_p = m.data_ptr<scalar_t>();
    for_each_unit(saved.size(0), H, [&](int64_t row, int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {  // once per backward with projection: left scalar
        m_p[row * H + j] = lstm::hidden<acc_t>(sv[row * 5 * H + 3 * H + j], sv[row * 5 * H + 4 * H + j]);
      }
    });
  });
  return m;
}

// The fused walks (see fused_walk.h) for an LSTM without projection in float or double.
// w_hh is packed into panels before the first step: by unit group, each group's four gates'
// rows, for the forward walk; by chunk of units, their columns, for the backward walk.

// Measured on 2 cores, float32, us per step (fused_walk.h's FusedPolicy):
// - the most rows for which each fused walk beats the BLAS walk (H from 64 to 1024, fused vs
//   BLAS): forward B64 H512 1449 vs 2002, B192 H256 1455 vs 1679, B256 H256 1884 vs 1746;
//   backward B64 H512 2624 vs 2967, B128 H256 1633 vs 1589, B192 H256 2521 vs 2322;
// - the rows split against the units split (median of 7 to 15 interleaved runs, units vs
//   rows): forward B32 H128 159 vs 151, B16 H64 27.2 vs 29.0, B32 H256 307 vs 317;
//   backward B8 H64 12.6 vs 11.8, B16 H64 27.4 vs 22.2, B32 H128 138 vs 116, B32 H256 (a
//   1 MB weight) 493 vs 451, B64 H512 (4 MB) 3682 vs 3870.
constexpr FusedPolicy kFusedForward{192, 16, 384 << 10}, kFusedBackward{128, 4, 1 << 20};

// Forward walk. Unit group u (V units, V = kPanelWidth / 2) has two panels over K = H:
// gates i and f of its units, then g and o. Arguments as lstm_forward's, as raw pointers;
// gh: [B, 4H] scratch; h_state, c_state: [B, H], updated. The threads split the units or
// the rows as `split` says (run_split_walk).
template <typename T>
void lstm_forward_fused(const T* gx, const Schedule& schedule, const T* h0, const T* w_hh,
                        T* h_state, T* c_state, T* y, T* saved, T* gh, int64_t B, int64_t H,
                        bool save, FusedSplit split) {
  constexpr int64_t W = kPanelWidth<T>, V = W / 2;
  const int64_t groups = (H + V - 1) / V;
  Tensor panels_t = at::empty({groups * 2 * H * W}, at::CPU(c10::CppTypeToScalarType<T>::value));
  T* panels = panels_t.data_ptr<T>();
  const auto pack_group = [&](int64_t u) {
    for (int64_t half = 0; half < 2; ++half) {  // gates (i, f), then (g, o)
      pack_panel(panels + (2 * u + half) * H * W, H, 1, [&](int64_t c) -> const T* {
        const int64_t unit = u * V + c % V, gate = 2 * half + c / V;
        return unit < H ? w_hh + (gate * H + unit) * H : nullptr;
      });
    }
  };
  const auto units = save ? lstm_forward_units<true, T> : lstm_forward_units<false, T>;
  run_split_walk(split, B, H, V, pack_group, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                                 int64_t r_end, const auto& sync) {
    const T* rows[kMaxPanelRows];
    T out[kMaxPanelRows * 2 * W];  // per row: the 4 gates of V units
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, schedule.rows(s));
      // Unit group by unit group, so that the group's two panels stay in L1 over the rows.
      for (int64_t u = j0 / V; u * V < j1; ++u) {
        const int64_t u0 = u * V, u1 = std::min(H, u0 + V);
        for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
          const int64_t r0 = r_begin + block;
          for (int r = 0; r < n; ++r) rows[r] = previous_row(y, H, h0, schedule, s, r0 + r, H);
          panel_product(n, rows, panels + 2 * u * H * W, H, out);
          panel_product(n, rows, panels + (2 * u + 1) * H * W, H, out + n * W);
          for (int r = 0; r < n; ++r) {
            for (int64_t gate = 0; gate < lstm::kGates; ++gate) {
              const T* src = out + (gate / 2) * n * W + r * W + (gate % 2) * V;
              std::memcpy(gh + (r0 + r) * 4 * H + gate * H + u0, src, (u1 - u0) * sizeof(T));
            }
          }
        });
        for (int64_t r = r_begin; r < r_last; ++r) {
          T* h = y + (first + r) * H;
          units(gx + (first + r) * 4 * H, gh + r * 4 * H, c_state + r * H,
                save ? saved + (first + r) * 5 * H : nullptr, h, H, u0, u1);
          std::memcpy(h_state + r * H + u0, h + u0, (u1 - u0) * sizeof(T));
        }
      }
      sync();
    }
  });
}

// Backward walk. Column chunk k (W columns of w_hh [4H, H]) is one panel over K = 4H.
// Arguments as lstm_backward's, as raw pointers; dh_state: [B, H], dc_state: [B, H],
// updated; grad_gx: [N, 4H] written. The threads split the units or the rows as in the
// forward walk: by units, a thread computes its units' gate gradients, and after the
// barrier its columns (the same units) of dh_prev; by rows, both for its own rows.
template <typename T>
void lstm_backward_fused(const T* grad_y, const Schedule& schedule, const T* c0,
                         const T* w_hh, const T* saved, T* dh_state, T* dc_state, T* grad_gx,
                         int64_t B, int64_t H, FusedSplit split) {
  constexpr int64_t W = kPanelWidth<T>;
  const int64_t chunks = (H + W - 1) / W, K = 4 * H;
  Tensor panels_t = at::empty({chunks * K * W}, at::CPU(c10::CppTypeToScalarType<T>::value));
  T* panels = panels_t.data_ptr<T>();
  const auto pack_chunk = [&](int64_t k) {
    pack_panel(panels + k * K * W, K, H, [&](int64_t c) -> const T* {
      return k * W + c < H ? w_hh + k * W + c : nullptr;
    });
  };
  run_split_walk(split, B, H, W, pack_chunk, [&](int64_t j0, int64_t j1, int64_t r_begin,
                                                 int64_t r_end, const auto& sync) {
    const T* rows[kMaxPanelRows];
    T out[kMaxPanelRows * W];
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t first = schedule.first_row(s);
      const int64_t r_last = std::min(r_end, schedule.rows(s));
      for (int64_t r = r_begin; r < r_last; ++r) {
        const T* c_prev = previous_row(saved + 4 * H, 5 * H, c0, schedule, s, r, H);
        lstm_backward_units<true, T>(dh_state + r * H, grad_y + (first + r) * H,
                                     dc_state + r * H, saved + (first + r) * 5 * H, c_prev,
                                     grad_gx + (first + r) * K, H, j0, j1);
      }
      sync();  // by units: every unit's gate gradients of this step are written
      for (int64_t k = j0 / W; k * W < j1; ++k) {  // a panel stays in L1 over the rows
        for_each_row_block(r_last - r_begin, [&](int64_t block, int n) {
          const int64_t r0 = r_begin + block;
          for (int r = 0; r < n; ++r) rows[r] = grad_gx + (first + r0 + r) * K;
          panel_product(n, rows, panels + k * K * W, K, out);
          const int64_t columns = std::min(W, H - k * W);
          for (int r = 0; r < n; ++r) {
            std::memcpy(dh_state + (r0 + r) * H + k * W, out + r * W, columns * sizeof(T));
          }
        });
      }
    }
  });
}

// gx: [N, 4H] pre-activations from the input side (biases included); h0: [B, P];
// c0: [B, H]; w_hh: [4H, P]; w_hr: [P, H] or none (then P = H).
// Returns y: [N, P]; hn: [B, P]; cn: [B, H]; saved: [N, 5H] = [i|f|g|o|c] per row, read by
// lstm_backward ([0, 5H] unless save).
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& gx_in,
                                                       const Tensor& batch_sizes,
                                                       const Tensor& h0, const Tensor& c0,
                                                       const Tensor& w_hh,
                                                       const optional<Tensor>& w_hr,
                                                       bool reverse, bool save) {
  const char* op = "lstm_forward";
  const auto sz = check_lstm_forward(op, gx_in, batch_sizes, h0, c0, w_hh, w_hr);
  const int64_t H = sz.H, P = sz.P;
  const Tensor gx = gx_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  const bool proj = w_hr.has_value();

  const Tensor h0_c = h0.contiguous();
  Tensor h_state = h0_c.clone();  // [B, P], rows updated as steps visit them
  Tensor c_state = c0.contiguous().clone();  // [B, H]
  Tensor y = at::empty({sz.N, P}, gx.options());
  Tensor saved = at::empty({save ? sz.N : 0, lstm::kSaved * H}, gx.options());
  Tensor gh = at::empty({sz.B, lstm::kGates * H}, gx.options());  // h_prev @ w_hh^T
  Tensor m = proj ? at::empty({sz.B, H}, gx.options()) : Tensor();  // o * tanh(c)

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), "lstm_forward", [&] {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
      const FusedSplit split =
          proj ? FusedSplit::kNone : fused_split(kFusedForward, sz.B, w_hh.nbytes());
      if (split != FusedSplit::kNone) {
        lstm_forward_fused(gx.data_ptr<scalar_t>(), schedule, h0_c.data_ptr<scalar_t>(),
                           w_hh.contiguous().data_ptr<scalar_t>(),
                           h_state.data_ptr<scalar_t>(), c_state.data_ptr<scalar_t>(),
                           y.data_ptr<scalar_t>(),
                           save ? saved.data_ptr<scalar_t>() : nullptr, gh.data_ptr<scalar_t>(),
                           sz.B, H, save, split);
        return;
      }
    }
    const StepGemm<scalar_t> recurrent(w_hh.t());                // [b, P] -> [b, 4H]
    const StepGemm<scalar_t> project(proj ? w_hr->t() : w_hh);  // [b, H] -> [b, P]
    for (int64_t s = 0; s < schedule.steps(); ++s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      recurrent(b, h_state.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>());
      const scalar_t* gx_p = gx.data_ptr<scalar_t>() + first * 4 * H;
      const scalar_t* gh_p = gh.data_ptr<scalar_t>();
      scalar_t* saved_p = save ? saved.data_ptr<scalar_t>() + first * 5 * H : nullptr;
      scalar_t* c_p = c_state.data_ptr<scalar_t>();
      // Without projection h goes straight to the state.
      scalar_t* h_p = proj ? m.data_ptr<scalar_t>() : h_state.data_ptr<scalar_t>();
      const auto units = save ? lstm_forward_units<true, scalar_t>
                              : lstm_forward_units<false, scalar_t>;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        units(gx_p + row * 4 * H, gh_p + row * 4 * H, c_p + row * H,
              save ? saved_p + row * 5 * H : nullptr, h_p + row * H, H, j0, j1);
      });
      if (proj) project(b, m.data_ptr<scalar_t>(), h_state.data_ptr<scalar_t>());
      copy_rows(y, first, h_state, b);
    }
  });
  return {y, h_state, c_state, saved};
}

// Gradients of lstm_forward. grad_y: [N, P]; grad_hn: [B, P]; grad_cn: [B, H]; the rest
// as passed to and returned by lstm_forward (saved is only read).
// Returns grad_gx: [N, 4H]; grad_h0: [B, P]; grad_c0: [B, H]; grad_w_hh: [4H, P];
// grad_w_hr: [P, H], or [0] without projection.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_y_in, const Tensor& grad_hn, const Tensor& grad_cn,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
    const optional<Tensor>& w_hr, const Tensor& y_in, const Tensor& saved_in, bool reverse) {
  const char* op = "lstm_backward";
  const auto sz = check_lstm_backward(op, grad_y_in, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh,
                      w_hr, y_in, saved_in);
  const int64_t H = sz.H, P = sz.P;

  const Tensor grad_y = grad_y_in.contiguous(), saved = saved_in.contiguous();
  const Schedule schedule(batch_sizes, reverse);
  const bool proj = w_hr.has_value();

  Tensor dh_state = grad_hn.contiguous().clone();  // [B, P]: gradient w.r.t. the h state
  Tensor dc_state = grad_cn.contiguous().clone();  // [B, H]
  Tensor grad_gx = at::empty({sz.N, 4 * H}, saved.options());
  const Tensor c0_c = c0.contiguous();
  Tensor dh_all = proj ? at::empty({sz.N, P}, saved.options()) : Tensor();  // for grad_w_hr
  Tensor dm = proj ? at::empty({sz.B, H}, saved.options()) : Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, saved.scalar_type(), "lstm_backward", [&] {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
      const FusedSplit split =
          proj ? FusedSplit::kNone : fused_split(kFusedBackward, sz.B, w_hh.nbytes());
      if (split != FusedSplit::kNone) {
        lstm_backward_fused(grad_y.data_ptr<scalar_t>(), schedule, c0_c.data_ptr<scalar_t>(),
                            w_hh.contiguous().data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                            dh_state.data_ptr<scalar_t>(), dc_state.data_ptr<scalar_t>(),
                            grad_gx.data_ptr<scalar_t>(), sz.B, H, split);
        return;
      }
    }
    const StepGemm<scalar_t> recurrent(w_hh);                // [b, 4H] -> [b, P]
    const StepGemm<scalar_t> project(proj ? *w_hr : w_hh);  // [b, P] -> [b, H]
    for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
      const int64_t b = schedule.rows(s), first = schedule.first_row(s);
      if (b == 0) continue;
      if (proj) {  // dh = grad_y + dh_state, then back through h = m @ w_hr^T
        scalar_t* dh = dh_state.data_ptr<scalar_t>();
        const scalar_t* gy = grad_y.data_ptr<scalar_t>() + first * P;
        scalar_t* dh_saved = dh_all.data_ptr<scalar_t>() + first * P;
        for (int64_t k = 0; k < b * P; ++k) dh_saved[k] = dh[k] = dh[k] + gy[k];
        project(b, dh, dm.data_ptr<scalar_t>());
      }
      const scalar_t* dh_p = proj ? dm.data_ptr<scalar_t>() : dh_state.data_ptr<scalar_t>();
      const scalar_t* gy_p = grad_y.data_ptr<scalar_t>() + first * P;  // read unless proj
      const scalar_t* sv_p = saved.data_ptr<scalar_t>() + first * 5 * H;
      scalar_t* dc_p = dc_state.data_ptr<scalar_t>();
      scalar_t* dg_p = grad_gx.data_ptr<scalar_t>() + first * 4 * H;
      for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
        const auto units = proj ? lstm_backward_units<false, scalar_t>
                                : lstm_backward_units<true, scalar_t>;
        const scalar_t* c_prev = previous_row(saved.data_ptr<scalar_t>() + 4 * H, 5 * H,
                                              c0_c.data_ptr<scalar_t>(), schedule, s, row, H);
        units(dh_p + row * H, gy_p + row * H, dc_p + row * H, sv_p + row * 5 * H, c_prev,
              dg_p + row * 4 * H, H, j0, j1);
      });
      recurrent(b, dg_p, dh_state.data_ptr<scalar_t>());
    }
  });

  Tensor grad_w_hh = recurrent_weight_grad(grad_gx, y_in.contiguous(), h0, schedule, reverse);
  Tensor grad_w_hr = proj ? at::mm(dh_all.t(), lstm_hidden_from_saved(saved, H))
                          : at::empty({0}, saved.options());
  return {grad_gx, dh_state, dc_state, grad_w_hh, grad_w_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace cpu
}  // namespace fastrnn
