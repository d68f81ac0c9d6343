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
// [H]. Their gradient (common/recurrence.h, norm_params_grad) is read from the saved
// normalised values and the gradients backward writes to grad_slots: per norm k, gamma's
// is sum over rows of d * n and beta's sum of d, with n in saved slots
// [kNormSlot[k], + kNormBlocks[k]) and d (the gradient w.r.t. the norm's output) in
// grad_slots blocks [sum of the earlier norms' kNormBlocks, + kNormBlocks[k]).

#include "gru.h"
#include "lstm.h"
#include "row.h"

namespace fastrnn {
namespace ln {

constexpr double kEps = 1e-5;

// The layer-normalised LSTM. Saved slots: i f g o c, the normalised product (4 slots),
// the normalised c, the cell output before projection, and the two norms' 1/sigma (every
// unit's column holds the row's value). grad_slots: the gradient w.r.t. the normalised
// product's output (= w.r.t. the pre-activations, 4 blocks) and w.r.t. LN(c).
struct LstmPolicy {
  static constexpr CellKind kKind = CellKind::kLayerNormLstm;
  static constexpr int kGates = 4;
  static constexpr int kI = 0, kF = 1, kG = 2, kO = 3, kSlotC = 4, kSlotNormH = 5,
                       kSlotNormC = 9, kSlotHidden = 10, kSlotRstdH = 11, kSlotRstdC = 12;
  static constexpr int kSaved = 13;
  static constexpr bool kCellState = true;
  static constexpr bool kBackwardCarry = true;  // dc
  static constexpr bool kRecurrentBias = false;  // b_hh is folded into gx
  static constexpr bool kSeparateDgh = true;  // w.r.t. the product before its norm
  static constexpr bool kProjection = true;
  static constexpr PrevSource kPrev = PrevSource::kSavedSlot;
  static constexpr int kPrevSlot = kSlotC;
  static constexpr int kUnitParams = 10;
  static constexpr bool kForwardOnly = false;
  static constexpr bool kRowWise = true;
  static constexpr int kGradSlots = 5;
  static constexpr int kNorms = 2, kNormBlocks[2] = {4, 1}, kNormSlot[2] = {kSlotNormH, kSlotNormC};

  template <class A, class Ctx, class T>
  FASTRNN_HD static void forward_row(const Ctx& ctx, const RowForward<T, A>& r) {
    const int64_t H = r.H;
    const T *gamma_h = r.params, *beta_h = r.params + 4 * H, *gamma_c = r.params + 8 * H,
            *beta_c = r.params + 9 * H;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto product = [&](int64_t j, int b) { return in(r.gh[b * H + j]); };
    const RowNorm<A> nh = row_norm<A, 4>(ctx, H, A(kEps), product);
    // Gate b's pre-activation; n: its normalised product.
    const auto pre = [&](int64_t j, int b, A& n) {
      const int64_t k = b * H + j;
      n = (product(j, b) - nh.mean) * nh.rstd;
      return in(r.gx[k]) + in(gamma_h[k]) * n + in(beta_h[k]);
    };
    ctx.for_units(H, [&](int64_t j) {
      A n[4];
      const A i = sigmoid(pre(j, kI, n[kI])), f = sigmoid(pre(j, kF, n[kF]));
      const A g = tanh_act(pre(j, kG, n[kG]));
      const A c = f * r.carry[j] + i * g;
      r.carry[j] = c;
      if (r.saved != nullptr) {
        pre(j, kO, n[kO]);
        T* sv = r.saved + j;
        sv[kI * H] = out(i);
        sv[kF * H] = out(f);
        sv[kG * H] = out(g);
        sv[kSlotC * H] = out(c);
        for (int b = 0; b < 4; ++b) sv[(kSlotNormH + b) * H] = out(n[b]);
      }
    });
    const RowNorm<A> nc =
        row_norm<A, 1>(ctx, H, A(kEps), [&](int64_t j, int) { return A(r.carry[j]); });
    ctx.for_units(H, [&](int64_t j) {
      A n_o;
      const A o = sigmoid(pre(j, kO, n_o));
      const A n_c = (r.carry[j] - nc.mean) * nc.rstd;
      const A h = o * tanh_act(in(gamma_c[j]) * n_c + in(beta_c[j]));
      r.h[j] = out(h);
      r.y[j] = out(h);
      if (r.saved != nullptr) {
        T* sv = r.saved + j;
        sv[kO * H] = out(o);
        sv[kSlotNormC * H] = out(n_c);
        sv[kSlotHidden * H] = out(h);
        sv[kSlotRstdH * H] = out(nh.rstd);
        sv[kSlotRstdC * H] = out(nc.rstd);
      }
    });
  }

  template <class A, class Ctx, class T>
  FASTRNN_HD static void backward_row(const Ctx& ctx, const RowBackward<T, A>& r) {
    const int64_t H = r.H;
    const T *gamma_h = r.params, *gamma_c = r.params + 8 * H, *beta_c = r.params + 9 * H;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto slot = [&](int q, int64_t j) { return in(r.saved[q * H + j]); };
    const A rstd_h = slot(kSlotRstdH, 0), rstd_c = slot(kSlotRstdC, 0);
    const auto dh = [&](int64_t j) { return in(r.dh[j]) + (r.grad_y ? in(r.grad_y[j]) : A(0)); };
    const auto tanh_c = [&](int64_t j) {
      return tanh_act(in(gamma_c[j]) * slot(kSlotNormC, j) + in(beta_c[j]));
    };
    // d: the gradient w.r.t. LN(c)'s output, dh * o * tanh'.
    const auto d_norm_c = [&](int64_t j) {
      return dh(j) * slot(kO, j) * dtanh_from_output(tanh_c(j));
    };
    const RowNormGrad<A> grad_c = row_norm_grad<A, 1>(ctx, H, [&](int64_t j, int, A& dn, A& n) {
      dn = d_norm_c(j) * in(gamma_c[j]);
      n = slot(kSlotNormC, j);
    });
    ctx.for_units(H, [&](int64_t j) {
      const A d_c_out = d_norm_c(j);
      const A dc = r.carry[j] + grad_c(d_c_out * in(gamma_c[j]), slot(kSlotNormC, j), rstd_c);
      const A i = slot(kI, j), f = slot(kF, j), g = slot(kG, j), o = slot(kO, j);
      A d[4];
      d[kO] = dh(j) * tanh_c(j) * dsigmoid_from_output(o);
      d[kI] = dc * g * dsigmoid_from_output(i);
      d[kF] = dc * in(r.prev[j]) * dsigmoid_from_output(f);
      d[kG] = dc * i * dtanh_from_output(g);
      r.carry[j] = dc * f;
      for (int b = 0; b < 4; ++b) r.dx[b * H + j] = r.grad_slots[b * H + j] = out(d[b]);
      r.grad_slots[4 * H + j] = out(d_c_out);
    });
    const auto dn_h = [&](int64_t j, int b, A& dn, A& n) {
      dn = in(r.dx[b * H + j]) * in(gamma_h[b * H + j]);
      n = slot(kSlotNormH + b, j);
    };
    const RowNormGrad<A> grad_h = row_norm_grad<A, 4>(ctx, H, dn_h);
    ctx.for_units(H, [&](int64_t j) {
      for (int b = 0; b < 4; ++b) {
        A dn, n;
        dn_h(j, b, dn, n);
        r.dgh[b * H + j] = out(grad_h(dn, n, rstd_h));
      }
    });
  }

  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A /*carry*/) {
    return rec;
  }
  template <class A>
  FASTRNN_HD static A hidden_from_saved(const A* saved) {
    return saved[kSlotHidden];
  }
};

// The layer-normalised GRU: the GRU's own per-unit math (gru::Policy) on the normalised
// product. Saved slots: the GRU's (r z n h_n), the normalised product (3 slots) and its
// 1/sigma. grad_slots: the gradient w.r.t. the normalised product's output (+ b_hh).
struct GruPolicy {
  using Unit = gru::Policy;
  static constexpr CellKind kKind = CellKind::kLayerNormGru;
  static constexpr int kGates = 3;
  static constexpr int kSlotNormH = Unit::kSaved, kSlotRstdH = kSlotNormH + 3;
  static constexpr int kSaved = kSlotRstdH + 1;
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
  static constexpr int kGradSlots = 3;
  static constexpr int kNorms = 1, kNormBlocks[1] = {3}, kNormSlot[1] = {kSlotNormH};

  template <class A, class Ctx, class T>
  FASTRNN_HD static void forward_row(const Ctx& ctx, const RowForward<T, A>& r) {
    const int64_t H = r.H;
    const T *gamma_h = r.params, *beta_h = r.params + 3 * H;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto product = [&](int64_t j, int b) { return in(r.gh[b * H + j]); };
    const RowNorm<A> nh = row_norm<A, 3>(ctx, H, A(kEps), product);
    const auto normalised = [&](int64_t j, int b) { return (product(j, b) - nh.mean) * nh.rstd; };
    ctx.for_units(H, [&](int64_t j) {
      A x[3], hh[3], slots[Unit::kSaved], no_carry = A(0);
      for (int b = 0; b < 3; ++b) {
        const int64_t k = b * H + j;
        hh[b] = in(gamma_h[k]) * normalised(j, b) + in(beta_h[k]);
        if (r.b_hh != nullptr) hh[b] += in(r.b_hh[k]);
        x[b] = in(r.gx[k]);
      }
      const A h = Unit::forward(x, hh, in(r.h_prev[j]), no_carry, slots,
                                static_cast<const A*>(nullptr));
      r.h[j] = out(h);
      r.y[j] = out(h);
      if (r.saved != nullptr) {
        T* sv = r.saved + j;
        for (int q = 0; q < Unit::kSaved; ++q) sv[q * H] = out(slots[q]);
        for (int b = 0; b < 3; ++b) sv[(kSlotNormH + b) * H] = out(normalised(j, b));
        sv[kSlotRstdH * H] = out(nh.rstd);
      }
    });
  }

  template <class A, class Ctx, class T>
  FASTRNN_HD static void backward_row(const Ctx& ctx, const RowBackward<T, A>& r) {
    const int64_t H = r.H;
    const T* gamma_h = r.params;
    const auto in = [](T v) { return Ctx::template in<A>(v); };
    const auto out = [](A v) { return Ctx::template out<T>(v); };
    const auto slot = [&](int q, int64_t j) { return in(r.saved[q * H + j]); };
    ctx.for_units(H, [&](int64_t j) {
      A slots[Unit::kSaved], dx[3], dgh[3], carry = r.carry[j];
      for (int q = 0; q < Unit::kSaved; ++q) slots[q] = slot(q, j);
      const A dh = in(r.dh[j]) + (r.grad_y ? in(r.grad_y[j]) : A(0));
      Unit::backward(dh, carry, slots, A(0), in(r.prev[j]), static_cast<const A*>(nullptr),
                     dx, dgh);
      r.carry[j] = carry;
      for (int b = 0; b < 3; ++b) {
        r.dx[b * H + j] = out(dx[b]);
        r.grad_slots[b * H + j] = out(dgh[b]);
      }
    });
    const auto dn_h = [&](int64_t j, int b, A& dn, A& n) {
      dn = in(r.grad_slots[b * H + j]) * in(gamma_h[b * H + j]);
      n = slot(kSlotNormH + b, j);
    };
    const RowNormGrad<A> grad_h = row_norm_grad<A, 3>(ctx, H, dn_h);
    const A rstd_h = slot(kSlotRstdH, 0);
    ctx.for_units(H, [&](int64_t j) {
      for (int b = 0; b < 3; ++b) {
        A dn, n;
        dn_h(j, b, dn, n);
        r.dgh[b * H + j] = out(grad_h(dn, n, rstd_h));
      }
    });
  }

  template <class A>
  FASTRNN_HD static A h0_grad(A rec, A carry) {
    return rec + carry;
  }
};

}  // namespace ln
}  // namespace fastrnn
