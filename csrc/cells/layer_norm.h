#pragma once
// Layer-normalised LSTM and GRU (Ba, Kiros & Hinton, "Layer Normalization", 2016): the
// recurrent product of each row is normalised over its G*H values before the bias,
//   LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + eps) + beta,  eps = 1e-5,
// and the LSTM's output reads the normalised cell state:
//   LSTM  a = gx + LN(h_prev W_hh^T; gamma_h, beta_h)     (gx = LN(x W_ih^T) + b_ih + b_hh)
//         i, f, g, o and c as the LSTM's (lstm.h)         h = o * tanh(LN(c; gamma_c, beta_c))
//   GRU   gh = LN(h_prev W_hh^T; gamma_h, beta_h) + b_hh  (gx = LN(x W_ih^T) + b_ih)
//         r, z, n and h as the GRU's (gru.h), so b_hn stays inside r * (.)
// The input side's norm is applied to x W_ih^T for all rows at once, before the walk;
// these policies do the recurrent side's inside each step (row-wise cells: row.h).
//
// unit_params (K*H): gamma_h [G*H], beta_h [G*H], then for the LSTM gamma_c [H], beta_c
// [H]. A row saves its product h_prev W_hh^T as the GEMM gave it (and the LSTM its c), from
// which backward recomputes the norms' statistics: the same code on the same values, so the
// same numbers (but for the LSTM's c in 16-bit storage, saved rounded while forward
// normalised the float carry). Backward adds to the row's params_grad (laid out as
// unit_params) per norm d * n (gamma's part) and d (beta's part), with n the normalised
// value and d the gradient w.r.t. the norm's output.

#include "gru.h"
#include "lstm.h"
#include "row.h"

namespace fastrnn {
namespace ln {

constexpr double kEps = 1e-5;

// The last part of both policies' backward_row: the gradient w.r.t. the recurrent product
// before its norm, into r.dgh ([G*H]). d_out(j, b): unit j's gradient w.r.t. the norm's
// output in block b (it may read r.dgh: each element is read before it is replaced);
// gamma_h: [G*H] the norm's scale; n(j, b) the normalised product; rstd its 1/sigma.
template <class A, int G, class Ctx, class T, class DOut, class N>
FASTRNN_HD void product_norm_backward(const Ctx& ctx, const RowBackward<T, A>& r,
                                      const T* gamma_h, A rstd, const DOut& d_out, const N& n) {
  const int64_t H = r.H;
  const auto dn = [&](int64_t j, int b) {
    return d_out(j, b) * Ctx::template in<A>(gamma_h[b * H + j]);
  };
  const RowNormGrad<A> grad = row_norm_grad<A, G>(ctx, H, dn, n);
  ctx.for_units(H, [&](int64_t j) {
    for (int b = 0; b < G; ++b) {
      r.dgh[b * H + j] = Ctx::template out<T>(grad(dn(j, b), n(j, b), rstd));
    }
  });
}

// The layer-normalised LSTM. Saved slots: i f g o c and the product (4 slots).
struct LstmPolicy {
  static constexpr CellKind kKind = CellKind::kLayerNormLstm;
  static constexpr int kGates = 4;
  static constexpr int kI = 0, kF = 1, kG = 2, kO = 3, kSlotC = 4, kSlotProduct = 5;
  static constexpr int kSaved = 9;
  static constexpr bool kCellState = true;
  static constexpr bool kBackwardCarry = true;  // dc
  static constexpr bool kRecurrentBias = false;  // b_hh is folded into gx
  static constexpr bool kSeparateDgh = true;  // w.r.t. the product before its norm
  static constexpr bool kProjection = true;   // the cell output: hidden_row
  static constexpr PrevSource kPrev = PrevSource::kSavedSlot;
  static constexpr int kPrevSlot = kSlotC;
  static constexpr int kUnitParams = 10;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = true;
  // unit_params' blocks of H: gamma_h, beta_h, gamma_c, beta_c.
  static constexpr int kGammaH = 0, kBetaH = 4, kGammaC = 8, kBetaC = 9;

  template <class A, bool kSave, bool /*kBias: none*/, class Ctx, class T>
  FASTRNN_HD static void forward_row(const Ctx& ctx, const RowForward<T, A>& r) {
    const int64_t H = r.H;
    const T* p = r.params;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto product = [&](int64_t j, int b) { return in(r.gh[b * H + j]); };
    const RowNorm<A> nh = row_norm<A, 4>(ctx, H, A(kEps), product);
    const auto pre = [&](int64_t j, int b) {  // gate b's pre-activation
      const int64_t k = b * H + j;
      return in(r.gx[k]) + in(p[kGammaH * H + k]) * nh(product(j, b)) + in(p[kBetaH * H + k]);
    };
    ctx.for_units(H, [&](int64_t j) {
      const A i = sigmoid(pre(j, kI)), f = sigmoid(pre(j, kF)), g = tanh_act(pre(j, kG));
      const A c = f * r.carry[j] + i * g;
      r.carry[j] = c;
      if constexpr (kSave) {
        T* sv = r.saved + j;
        sv[kI * H] = out(i);
        sv[kF * H] = out(f);
        sv[kG * H] = out(g);
        sv[kSlotC * H] = out(c);
        for (int b = 0; b < 4; ++b) sv[(kSlotProduct + b) * H] = r.gh[b * H + j];
      }
    });
    const RowNorm<A> nc =
        row_norm<A, 1>(ctx, H, A(kEps), [&](int64_t j, int) { return r.carry[j]; });
    ctx.for_units(H, [&](int64_t j) {
      const A o = sigmoid(pre(j, kO));
      const A h = o * tanh_act(in(p[kGammaC * H + j]) * nc(r.carry[j]) + in(p[kBetaC * H + j]));
      r.h[j] = out(h);
      r.y[j] = out(h);
      if constexpr (kSave) r.saved[kO * H + j] = out(o);
    });
  }

  template <class A, bool kAddGradY, class Ctx, class T>
  FASTRNN_HD static void backward_row(const Ctx& ctx, const RowBackward<T, A>& r) {
    const int64_t H = r.H;
    const T* p = r.params;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto slot = [&](int q, int64_t j) { return in(r.saved[q * H + j]); };
    const auto product = [&](int64_t j, int b) { return slot(kSlotProduct + b, j); };
    const RowNorm<A> nh = row_norm<A, 4>(ctx, H, A(kEps), product);
    const RowNorm<A> nc =
        row_norm<A, 1>(ctx, H, A(kEps), [&](int64_t j, int) { return slot(kSlotC, j); });
    const auto n_c = [&](int64_t j) { return nc(slot(kSlotC, j)); };
    // First tanh(LN(c)) and the gradient w.r.t. LN(c)'s output, dh * o * tanh', into the
    // first two blocks of dgh (free until its last loop), read from there: one tanh a unit.
    T* gs_tanh_c = r.dgh;
    T* gs_d_c = r.dgh + H;
    ctx.for_units(H, [&](int64_t j) {
      const A dh = r.template dh_total<kAddGradY, Ctx>(j);
      const A t = tanh_act(in(p[kGammaC * H + j]) * n_c(j) + in(p[kBetaC * H + j]));
      gs_tanh_c[j] = out(t);
      gs_d_c[j] = out(dh * slot(kO, j) * dtanh_from_output(t));
    });
    const RowNormGrad<A> grad_c = row_norm_grad<A, 1>(
        ctx, H, [&](int64_t j, int) { return in(gs_d_c[j]) * in(p[kGammaC * H + j]); },
        [&](int64_t j, int) { return n_c(j); });
    ctx.for_units(H, [&](int64_t j) {
      const A d_c_out = in(gs_d_c[j]), tanh_c = in(gs_tanh_c[j]);
      const A dc = r.carry[j] + grad_c(d_c_out * in(p[kGammaC * H + j]), n_c(j), nc.rstd);
      const A i = slot(kI, j), f = slot(kF, j), g = slot(kG, j), o = slot(kO, j);
      const A dh = r.template dh_total<kAddGradY, Ctx>(j);
      A d[4];
      d[kO] = dh * tanh_c * dsigmoid_from_output(o);
      r.carry[j] = lstm::cell_backward<A>(dc, i, f, g, in(r.prev[j]), d[kI], d[kF], d[kG]);
      A* pg = r.params_grad + j;
      for (int b = 0; b < 4; ++b) {
        r.dx[b * H + j] = out(d[b]);
        pg[(kGammaH + b) * H] += d[b] * nh(product(j, b));
        pg[(kBetaH + b) * H] += d[b];
      }
      pg[kGammaC * H] += d_c_out * n_c(j);
      pg[kBetaC * H] += d_c_out;
    });
    product_norm_backward<A, 4>(
        ctx, r, p + kGammaH * H, nh.rstd, [&](int64_t j, int b) { return in(r.dx[b * H + j]); },
        [&](int64_t j, int b) { return nh(product(j, b)); });
  }

  // The row's cell output before projection, o * tanh(LN(c)), from its saved slots.
  template <class A, class Ctx, class T>
  FASTRNN_HD static void hidden_row(const Ctx& ctx, const T* saved, const T* p, T* hidden,
                                    int64_t H) {
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto c = [&](int64_t j, int) { return in(saved[kSlotC * H + j]); };
    const RowNorm<A> nc = row_norm<A, 1>(ctx, H, A(kEps), c);
    ctx.for_units(H, [&](int64_t j) {
      const A norm_c = in(p[kGammaC * H + j]) * nc(c(j, 0)) + in(p[kBetaC * H + j]);
      hidden[j] = Ctx::template out<T>(in(saved[kO * H + j]) * tanh_act(norm_c));
    });
  }

  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
};

// The layer-normalised GRU: the GRU's own per-unit math (gru::Policy) on the normalised
// product. Saved slots: the GRU's (r z n h_n) and the product (3 slots).
struct GruPolicy {
  using Unit = gru::Policy;
  static constexpr CellKind kKind = CellKind::kLayerNormGru;
  static constexpr int kGates = 3;
  static constexpr int kSlotProduct = Unit::kSaved, kSaved = kSlotProduct + 3;
  static constexpr bool kCellState = false;
  static constexpr bool kBackwardCarry = true;  // the direct part of dh_prev
  static constexpr bool kRecurrentBias = true;
  static constexpr bool kSeparateDgh = true;
  static constexpr bool kProjection = false;
  static constexpr PrevSource kPrev = PrevSource::kOutput;
  static constexpr int kPrevSlot = -1;
  static constexpr int kUnitParams = 6;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = true;
  static constexpr int kGammaH = 0, kBetaH = 3;  // unit_params' blocks of H

  template <class A, bool kSave, bool kBias, class Ctx, class T>
  FASTRNN_HD static void forward_row(const Ctx& ctx, const RowForward<T, A>& r) {
    const int64_t H = r.H;
    const T* p = r.params;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto product = [&](int64_t j, int b) { return in(r.gh[b * H + j]); };
    const RowNorm<A> nh = row_norm<A, 3>(ctx, H, A(kEps), product);
    ctx.for_units(H, [&](int64_t j) {
      A x[3], hh[3], slots[Unit::kSaved], no_carry = A(0);
      for (int b = 0; b < 3; ++b) {
        const int64_t k = b * H + j;
        hh[b] = in(p[kGammaH * H + k]) * nh(product(j, b)) + in(p[kBetaH * H + k]);
        if constexpr (kBias) hh[b] += in(r.b_hh[k]);
        x[b] = in(r.gx[k]);
      }
      const A h = Unit::forward(x, hh, in(r.h_prev[j]), no_carry, slots,
                                static_cast<const A*>(nullptr));
      r.h[j] = out(h);
      r.y[j] = out(h);
      if constexpr (kSave) {
        T* sv = r.saved + j;
        for (int q = 0; q < Unit::kSaved; ++q) sv[q * H] = out(slots[q]);
        for (int b = 0; b < 3; ++b) sv[(kSlotProduct + b) * H] = r.gh[b * H + j];
      }
    });
  }

  template <class A, bool kAddGradY, class Ctx, class T>
  FASTRNN_HD static void backward_row(const Ctx& ctx, const RowBackward<T, A>& r) {
    const int64_t H = r.H;
    const T* p = r.params;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto slot = [&](int q, int64_t j) { return in(r.saved[q * H + j]); };
    const auto product = [&](int64_t j, int b) { return slot(kSlotProduct + b, j); };
    const RowNorm<A> nh = row_norm<A, 3>(ctx, H, A(kEps), product);
    const auto n_h = [&](int64_t j, int b) { return nh(product(j, b)); };
    ctx.for_units(H, [&](int64_t j) {
      A slots[Unit::kSaved], dx[3], dgh[3], carry = r.carry[j];
      for (int q = 0; q < Unit::kSaved; ++q) slots[q] = slot(q, j);
      const A dh = r.template dh_total<kAddGradY, Ctx>(j);
      Unit::backward(dh, carry, slots, A(0), in(r.prev[j]), static_cast<const A*>(nullptr),
                     dx, dgh);
      r.carry[j] = carry;
      A* pg = r.params_grad + j;
      for (int b = 0; b < 3; ++b) {
        r.dx[b * H + j] = out(dx[b]);
        r.dgh[b * H + j] = out(dgh[b]);  // w.r.t. the norm's output, until the last loop
        pg[(kGammaH + b) * H] += dgh[b] * n_h(j, b);
        pg[(kBetaH + b) * H] += dgh[b];
      }
    });
    product_norm_backward<A, 3>(
        ctx, r, p + kGammaH * H, nh.rstd, [&](int64_t j, int b) { return in(r.dgh[b * H + j]); },
        n_h);
  }

  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A carry) {
    return rec + carry;
  }
};

}  // namespace ln
}  // namespace fastrnn
