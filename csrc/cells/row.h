#pragma once
// The interface of row-wise cells (kRowWise, policy.h): cells whose step reads reductions
// over a whole row (a layer norm's mean and variance), so that a walk hands the policy a
// row at a time rather than a unit. The policy's math is written once over a row context
// `ctx`, which says how the row's units are shared out:
//   ctx.for_units(H, f)   calls f(j) for the units j in [0, H) this thread does; a unit
//                         is done by the same thread in every call, so what f(j) wrote
//                         for unit j an earlier call's f(j) may read;
//   ctx.sum(v)            the sum over the row's threads of each one's v (every thread of
//                         the row calls it, in the same order);
//   Ctx::in<A>(t), Ctx::out<T>(a)   storage type T to accumulation type A and back.
// SerialRow below (one thread does the whole row) is the CPU walks' and the host
// emulation's; the CUDA row kernel's gives each row a block (cuda/row_kernel.cuh).

#include <cstdint>

#include "../common/activations.h"
#include "../common/macros.h"

namespace fastrnn {

// One row of one step, every pointer at the row's start (T: storage type; A: the type
// the carry is kept in). G = Cell::kGates, S = Cell::kSaved, K = Cell::kUnitParams.
template <class T, class A>
struct RowForward {
  const T* gx;      // [G*H] input-side pre-activations
  const T* gh;      // [G*H] h_prev @ w_hh^T, as the product gave it (no bias)
  const T* b_hh;    // [G*H] (kRecurrentBias with bias) or null
  const T* params;  // [K*H] the layer's unit_params
  const T* h_prev;  // [H] (the cells that read it)
  A* carry;         // [H] (kCellState) c_prev in, c out
  T* saved;         // [S*H] or null (no save)
  T* h;             // [H] the new state (may be h_prev: a unit reads its h_prev first)
  T* y;             // [H] a second copy of it (may be h)
  int64_t H;
};

template <class T, class A>
struct RowBackward {
  const T* dh;      // [H] gradient w.r.t. h through the next step's product
  const T* grad_y;  // [H] added to dh, or null
  A* carry;         // [H] (kBackwardCarry) replaced by this step's
  const T* saved;   // [S*H]
  const T* params;  // [K*H]
  const T* prev;    // [H] what Cell::kPrev names
  T* dx;            // [G*H] gradient w.r.t. gx
  T* dgh;           // [G*H] gradient w.r.t. gh (the product, before any normalisation)
  T* grad_slots;    // [kGradSlots*H]
  int64_t H;
};

// A row walked by one thread.
struct SerialRow {
  template <class F>
  FASTRNN_HD void for_units(int64_t H, const F& f) const {
    for (int64_t j = 0; j < H; ++j) f(j);
  }
  template <class A>
  FASTRNN_HD A sum(A v) const {
    return v;
  }
  template <class A, class T>
  FASTRNN_HD static A in(T v) {
    return A(v);
  }
  template <class T, class A>
  FASTRNN_HD static T out(A v) {
    return T(v);
  }
};

// Layer normalisation over the W = blocks * H values v(j, b) (unit j, block b) of a row:
// their mean and 1 / sqrt(variance + eps) (biased variance, as torch's layer_norm), in two
// passes for accuracy.
template <class A>
struct RowNorm {
  A mean, rstd;
};

template <class A, int kBlocks, class Ctx, class Value>
FASTRNN_HD RowNorm<A> row_norm(const Ctx& ctx, int64_t H, A eps, const Value& v) {
  const A inv_count = A(1) / A(kBlocks * H);
  A part = A(0);
  ctx.for_units(H, [&](int64_t j) {
    for (int b = 0; b < kBlocks; ++b) part += v(j, b);
  });
  const A mean = ctx.sum(part) * inv_count;
  part = A(0);
  ctx.for_units(H, [&](int64_t j) {
    for (int b = 0; b < kBlocks; ++b) {
      const A d = v(j, b) - mean;
      part += d * d;
    }
  });
  return {mean, inverse_sqrt(ctx.sum(part) * inv_count + eps)};
}

// The backward of n = (v - mean) * rstd over a row: with dn the gradient w.r.t. n
// (already times gamma), dv = rstd * (dn - mean(dn) - n * mean(dn * n)). The two means:
template <class A>
struct RowNormGrad {
  A mean_dn, mean_dn_n;
  FASTRNN_HD A operator()(A dn, A n, A rstd) const { return rstd * (dn - mean_dn - n * mean_dn_n); }
};

template <class A, int kBlocks, class Ctx, class Grad>
FASTRNN_HD RowNormGrad<A> row_norm_grad(const Ctx& ctx, int64_t H, const Grad& dn_and_n) {
  A part_dn = A(0), part_dn_n = A(0);
  ctx.for_units(H, [&](int64_t j) {
    for (int b = 0; b < kBlocks; ++b) {
      A dn, n;
      dn_and_n(j, b, dn, n);
      part_dn += dn;
      part_dn_n += dn * n;
    }
  });
  const A inv_count = A(1) / A(kBlocks * H);
  const A mean_dn = ctx.sum(part_dn) * inv_count;
  return {mean_dn, ctx.sum(part_dn_n) * inv_count};
}

}  // namespace fastrnn
