#pragma once
// The interface of row-wise cells (kRowWise, policy.h): cells whose step reads reductions
// over a whole row (a layer norm's mean and variance), so that a walk hands the policy a
// row at a time rather than a unit. The policy's math is written once over a row context
// `ctx`, which says how the row's units are shared out:
//   ctx.for_units(H, f)        calls f(j) for the units j in [0, H) this thread does; a
//                              unit is done by the same thread in every call, so what f(j)
//                              wrote for unit j an earlier call's f(j) may read;
//   ctx.sum_units<A>(H, f)     the sum of f(j) over every unit j of the row (every thread
//                              of the row calls it, in the same order, and gets the sum);
//   Ctx::in<A>(t), Ctx::out<T>(a)   storage type T to accumulation type A and back.
// SerialRow below (one thread does the whole row, its loops vectorised) is the CPU walks'
// and the host emulation's; the CUDA row kernel's gives each row a block
// (cuda/step_kernels.cu). The policies' forward_row<A, kSave, kBias> and
// backward_row<A, kAddGradY> take the walks' compile-time options: write saved, add b_hh,
// add grad_y.

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
  A* params_grad;   // [K*H] the row's part of the gradient w.r.t. unit_params, added to
                    //   (its later steps' already in)
  int64_t H;

  // Unit j's whole gradient w.r.t. h: dh, plus grad_y's when kAddGradY. Ctx: the row context
  // (its in<A>).
  template <bool kAddGradY, class Ctx>
  FASTRNN_HD A dh_total(int64_t j) const {
    A total = Ctx::template in<A>(dh[j]);
    if constexpr (kAddGradY) total += Ctx::template in<A>(grad_y[j]);
    return total;
  }
};

// Vectorised loops where OpenMP's simd pragmas are on (the CPU build), plain ones elsewhere;
// FASTRNN_FLATTEN inlines every call of a loop's body (the policies' lambdas, the
// activations), without which gcc leaves the larger bodies as calls and the loop scalar.
#if defined(_OPENMP) && !defined(__CUDACC__)
#define FASTRNN_SIMD _Pragma("omp simd")
#define FASTRNN_FLATTEN __attribute__((flatten))
#else
#define FASTRNN_SIMD
#define FASTRNN_FLATTEN
#endif

// A row walked by one thread.
struct SerialRow {
  template <class F>
  FASTRNN_FLATTEN FASTRNN_HD void for_units(int64_t H, const F& f) const {
    FASTRNN_SIMD
    for (int64_t j = 0; j < H; ++j) f(j);
  }
  // In kLanes partial sums, unit j's in lane j % kLanes: a vector's lanes (OpenMP's simd
  // reduction over j made gcc load f's operands by gathers).
  template <class A, class F>
  FASTRNN_FLATTEN FASTRNN_HD A sum_units(int64_t H, const F& f) const {
    constexpr int kLanes = 16;
    A part[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= H; j += kLanes) {
      FASTRNN_SIMD
      for (int k = 0; k < kLanes; ++k) part[k] += f(j + k);
    }
    for (int k = 0; j + k < H; ++k) part[k] += f(j + k);
    A s = A(0);
    for (int k = 0; k < kLanes; ++k) s += part[k];
    return s;
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
  FASTRNN_HD A operator()(A v) const { return (v - mean) * rstd; }  // v normalised
};

// v(j, b): unit j's value in block b.
template <class A, int kBlocks, class Ctx, class Value>
FASTRNN_HD RowNorm<A> row_norm(const Ctx& ctx, int64_t H, A eps, const Value& v) {
  const A inv_count = A(1) / A(kBlocks * H);
  const A mean = ctx.template sum_units<A>(H, [&](int64_t j) {
    A s = A(0);
    for (int b = 0; b < kBlocks; ++b) s += v(j, b);
    return s;
  }) * inv_count;
  const A var = ctx.template sum_units<A>(H, [&](int64_t j) {
    A s = A(0);
    for (int b = 0; b < kBlocks; ++b) s += (v(j, b) - mean) * (v(j, b) - mean);
    return s;
  }) * inv_count;
  return {mean, inverse_sqrt(var + eps)};
}

// The backward of n = (v - mean) * rstd over a row: with dn the gradient w.r.t. n
// (already times gamma), dv = rstd * (dn - mean(dn) - n * mean(dn * n)). The two means:
template <class A>
struct RowNormGrad {
  A mean_dn, mean_dn_n;
  FASTRNN_HD A operator()(A dn, A n, A rstd) const { return rstd * (dn - mean_dn - n * mean_dn_n); }
};

// dn(j, b) and n(j, b): unit j's gradient w.r.t. n and its n, in block b.
template <class A, int kBlocks, class Ctx, class Dn, class N>
FASTRNN_HD RowNormGrad<A> row_norm_grad(const Ctx& ctx, int64_t H, const Dn& dn, const N& n) {
  const A inv_count = A(1) / A(kBlocks * H);
  const A sum_dn = ctx.template sum_units<A>(H, [&](int64_t j) {
    A s = A(0);
    for (int b = 0; b < kBlocks; ++b) s += dn(j, b);
    return s;
  });
  const A sum_dn_n = ctx.template sum_units<A>(H, [&](int64_t j) {
    A s = A(0);
    for (int b = 0; b < kBlocks; ++b) s += dn(j, b) * n(j, b);
    return s;
  });
  return {sum_dn * inv_count, sum_dn_n * inv_count};
}

}  // namespace fastrnn
