#pragma once
// One block's work in a persistent recurrence, written once for the CUDA kernels and the
// host emulation. Each phase is a per-thread function (tid in [0, nthreads)) except the
// product, which is per warp (see dot_partial); a block-wide barrier separates phases and
// a grid-wide barrier separates steps:
//
//   forward:  load_weights | per step s = 0..T-1:
//               stage (h_{s-1} rows -> x_s) | product (x_s @ w_s^T -> acc_s: gh) |
//               gates_forward (gx + gh -> y, saved, carry) || grid barrier
//   backward: load_weights | per iteration s = T-1..-1:
//               stage (rows of step s+1's recurrent-side gradient -> x_s) |
//               product (x_s @ w_s -> acc_s: dh through W_hh for the owned units) |
//               gates_backward (-> grad_gx, grad_gh, carry; grad_h0, grad_c0) || grid barrier
//
// Global data written by other blocks during the launch (y rows forward, the gradient
// rows backward) is read with load_cross (ld.global.cg: from L2, never a stale L1 line),
// and only after the grid barrier that follows its writers.
//
// Cell is a cell policy (csrc/cells/policy.h), T the storage type; the math runs in
// acc_t<T> (element_types.h): float on the device, T itself (float or double) in the host
// emulation. Which row of the previous step a row continues is the walks' one rule,
// previous_packed_row (csrc/common/step.h), over step(s).

#include "../../cells/policy.h"
#include "../../common/step.h"
#include "../element_types.h"
#include "global_memory.h"
#include "mma.h"
#include "plan.h"

namespace fastrnn {
namespace persistent {

// The product of one step: out[r, c] = sum_k x_s[r, k] * w_s[c, k] for r < R, c < ncol,
// k < K; rows of x_s and w_s are ld apart and zero from K to K16 = K rounded up to 16.
struct DotJob {
  int ncol, R, K, K16;
};

// The tensor-core split of a DotJob: tiles of 16 rows x 8 columns, each split along K
// into ksplit parts of whole 16-deep chunks when there are fewer tiles than warps.
// Job q in [0, tiles * ksplit) is part q / tiles of tile q % tiles.
struct MmaJob {
  int col_tiles, tiles, ksplit, chunks;
};

template <class Cell, class T>
struct Block {
  using A = acc_t<T>;
  static constexpr int G = Cell::kGates;
  static constexpr int kSavedArr = Cell::kSaved > 0 ? Cell::kSaved : 1;
  static constexpr int kParams = Cell::kUnitParams, kParamsArr = kParams > 0 ? kParams : 1;

  Plan p;
  Params<T> a;
  int u0, nu;  // owned units [u0, u0 + nu)
  int ld;      // row stride of w_s and x_s
  T* w_s;      // forward [G*nu, H], backward [nu, G*H] (+ zero padding, see plan.h)
  T* x_s;      // forward [B, H], backward [B, G*H] (+ zero padding)
  A* acc_s;    // forward [B, G*nu], backward [B, nu]
  A* carry_s;  // [B, nu]
  A* part_s;   // [kMaxWarps, 16, 8]

  FASTRNN_HD Block(const Plan& plan, const Params<T>& args, int block, unsigned char* smem)
      : p(plan),
        a(args),
        u0(first_unit(plan, block)),
        nu(unit_count(plan, block)),
        ld(row_stride(plan)) {
    const SmemLayout l = smem_layout(plan, sizeof(T), sizeof(A));
    w_s = reinterpret_cast<T*>(smem + l.w);
    x_s = reinterpret_cast<T*>(smem + l.x);
    acc_s = reinterpret_cast<A*>(smem + l.acc);
    carry_s = reinterpret_cast<A*>(smem + l.carry);
    part_s = reinterpret_cast<A*>(smem + l.part);
  }

  FASTRNN_HD int rows(int s) const { return step_rows(p, a.sched, s); }
  FASTRNN_HD int first(int s) const { return step_first(p, a.sched, s); }
  // Step s (steps outside [0, T) have no rows): rows i < carried continue row
  // prev_first + i of step s-1, the others start from h0 / c0.
  FASTRNN_HD Step step(int s) const {
    const int R = rows(s), Rp = rows(s - 1);
    return {R, R > 0 ? first(s) : 0, R < Rp ? R : Rp, Rp > 0 ? first(s - 1) : 0};
  }

  // Every slot of w_s, padding included (zero).
  FASTRNN_HD void load_weights(int tid, int nthreads) const {
    const int H = p.H, K = product_depth(p), ncol = p.backward ? nu : G * nu;
    const int n = padded_columns(p) * ld;
    for (int idx = tid; idx < n; idx += nthreads) {
      const int c = idx / ld, k = idx % ld;
      T v = from_acc<T>(A(0));
      if (c < ncol && k < K) {
        if (!p.backward) {  // w_s[(g*nu + u)*ld + k] = w_hh[g*H + u0 + u, k]
          v = a.w_hh[size_t(c / nu * H + u0 + c % nu) * H + k];
        } else {  // w_s[u*ld + k] = w_hh[k, u0 + u]
          v = a.w_hh[size_t(k) * H + u0 + c];
        }
      }
      w_s[idx] = v;
    }
  }

  // Where row i of x_s comes from at step s (forward) / iteration s (backward): row
  // previous_packed_row(step, i) of `from`, or row i of `init` when that is -1 (width
  // elements per row). Forward: h_prev of row i of step s, from y or h0. Backward: row i
  // of step s+1's recurrent-side gradient (a step whose every row is carried).
  struct Rows {
    const T *from, *init;
    Step step;
    int width;
    FASTRNN_HD const T* row(int i) const {
      const int64_t prev = previous_packed_row(step, i);
      return prev >= 0 ? from + size_t(prev) * width : init + size_t(i) * width;
    }
  };
  FASTRNN_HD Rows staged_rows(int s) const {
    if (!p.backward) return {a.y, a.h0, step(s), p.H};
    const T* src = Cell::kSeparateDgh ? a.grad_gh : a.grad_gx;
    const int R = rows(s + 1);
    return {src, src, Step{R, 0, R, R > 0 ? first(s + 1) : 0}, G * p.H};
  }

  // x_s[i, :K] = staged_rows(s).row(i) for the R rows; rows up to the next multiple of 16 and
  // columns from K on are zero. 16 bytes per load when plan.vec_stage.
  FASTRNN_HD void stage(int s, int tid, int nthreads) const {
    const int K = product_depth(p);
    const int R = p.backward ? rows(s + 1) : rows(s);
    if (R == 0) return;
    const int R16 = (R + 15) / 16 * 16;
    const Rows src = staged_rows(s);
    if (p.vec_stage) {
      constexpr int V = 16 / sizeof(T);
      const int per_row = ld / V;  // ld is a multiple of 8, V of 8 / 4 / 2
      for (int idx = tid; idx < R16 * per_row; idx += nthreads) {
        const int i = idx / per_row, k = idx % per_row * V;
        Vec16 v{{0u, 0u, 0u, 0u}};
        if (i < R && k < K) v = load_cross16(src.row(i) + k);
        *reinterpret_cast<Vec16*>(x_s + size_t(i) * ld + k) = v;
      }
      return;
    }
    for (int idx = tid; idx < R16 * ld; idx += nthreads) {
      const int i = idx / ld, k = idx % ld;
      x_s[idx] = i < R && k < K ? load_cross(src.row(i) + k) : from_acc<T>(A(0));
    }
  }

  FASTRNN_HD DotJob job(int s) const {
    const int K = product_depth(p), K16 = (K + 15) / 16 * 16;
    if (!p.backward) return {G * nu, rows(s), K, K16};
    return {nu, rows(s + 1), K, K16};
  }

  // The FFMA product, per warp: columns c + q*stride (q < kColsPerPass, those < ncol),
  // rows [r0, r0 + kMaxRowsPerPass). One lane's share: acc[q][r] += the sum over
  // k = lane, lane + 32, ... of x_s[r0 + r, k] * w_s[c + q*stride, k]; each x_s value is
  // loaded once for all the columns. The warp then adds its 32 lanes with a butterfly
  // (dot_phase in persistent.cu, and its host twin in the emulation).
  FASTRNN_HD static int dot_columns(const DotJob& j, int c, int stride) {
    const int n = (j.ncol - c + stride - 1) / stride;
    return n < kColsPerPass ? n : kColsPerPass;
  }
  FASTRNN_HD void dot_partial(const DotJob& j, int c, int stride, int r0, int lane,
                              A (*acc)[kMaxRowsPerPass]) const {
    const int nq = dot_columns(j, c, stride), nr = j.R - r0;
    const T* x = x_s + size_t(r0) * ld;
    for (int k = lane; k < j.K; k += kWarp) {
      A w[kColsPerPass];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int q = 0; q < kColsPerPass; ++q) {
        w[q] = q < nq ? to_acc(w_s[size_t(c + q * stride) * ld + k]) : A(0);
      }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int r = 0; r < kMaxRowsPerPass; ++r) {
        if (r < nr) {
          const A xr = to_acc(x[size_t(r) * ld + k]);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
          for (int q = 0; q < kColsPerPass; ++q) acc[q][r] += xr * w[q];
        }
      }
    }
  }

  FASTRNN_HD void dot_store(const DotJob& j, int c, int r0, const A* acc) const {
    const int nr = j.R - r0 < kMaxRowsPerPass ? j.R - r0 : kMaxRowsPerPass;
    for (int r = 0; r < nr; ++r) acc_s[size_t(r0 + r) * j.ncol + c] = acc[r];
  }

  FASTRNN_HD MmaJob mma_job(const DotJob& j, int nwarps) const {
    MmaJob m;
    m.col_tiles = (j.ncol + 7) / 8;
    m.tiles = (j.R + 15) / 16 * m.col_tiles;
    m.chunks = j.K16 / 16;
    // A step with no rows (batch_sizes may end in zeros) has no tiles and no split.
    m.ksplit = m.tiles == 0 || m.tiles >= nwarps ? 1 : nwarps / m.tiles;
    if (m.ksplit > m.chunks) m.ksplit = m.chunks;
    return m;
  }

  // Job q's operands: the tile's first row of x_s and first column of w_s, and its K range.
  FASTRNN_HD void mma_operands(const MmaJob& m, int q, const T** x, const T** w, int* k0,
                               int* k1) const {
    const int tile = q % m.tiles, part = q / m.tiles;
    *x = x_s + size_t(tile / m.col_tiles) * 16 * ld;
    *w = w_s + size_t(tile % m.col_tiles) * 8 * ld;
    *k0 = part * m.chunks / m.ksplit * 16;
    *k1 = (part + 1) * m.chunks / m.ksplit * 16;
  }

  // A lane's 4 results of job q: straight into acc_s without a K split, else into part_s.
  FASTRNN_HD void mma_store(const DotJob& j, const MmaJob& m, int q, int lane,
                            const A* out) const {
    const int tile = q % m.tiles;
    for (int i = 0; i < 4; ++i) {
      int r, c;
      frag_coords(lane, i, &r, &c);
      if (m.ksplit > 1) {
        part_s[q * kTileElems + r * 8 + c] = out[i];
        continue;
      }
      const int row = tile / m.col_tiles * 16 + r, col = tile % m.col_tiles * 8 + c;
      if (row < j.R && col < j.ncol) acc_s[size_t(row) * j.ncol + col] = out[i];
    }
  }

  // With a K split: acc_s = the parts of each tile added in part order (deterministic).
  FASTRNN_HD void mma_reduce(const DotJob& j, const MmaJob& m, int tid, int nthreads) const {
    if (m.ksplit == 1) return;
    for (int idx = tid; idx < m.tiles * kTileElems; idx += nthreads) {
      const int tile = idx / kTileElems, e = idx % kTileElems;
      const int row = tile / m.col_tiles * 16 + e / 8, col = tile % m.col_tiles * 8 + e % 8;
      if (row >= j.R || col >= j.ncol) continue;
      A sum = part_s[tile * kTileElems + e];
      for (int part = 1; part < m.ksplit; ++part) {
        sum += part_s[(part * m.tiles + tile) * kTileElems + e];
      }
      acc_s[size_t(row) * j.ncol + col] = sum;
    }
  }

  // The gx values of thread tid's first (row, unit) of step s, loaded ahead (the kernel
  // issues the loads before the grid barrier, so their latency hides behind it).
  FASTRNN_HD void load_gx(int s, int tid, A* x) const {
    if (tid >= rows(s) * nu) return;
    const size_t row = size_t(first(s) + tid / nu);
    for (int g = 0; g < G; ++g) x[g] = to_acc(a.gx[row * G * p.H + g * p.H + u0 + tid % nu]);
  }

  // Unit j's per-unit constants (Cell::kUnitParams, unit_params [K*H]: peepholes).
  FASTRNN_HD void load_params(int j, A* params) const {
    for (int k = 0; k < kParams; ++k) params[k] = to_acc(a.unit_params[size_t(k) * p.H + j]);
  }

  // Rows of step s, units [u0, u0+nu): gate math, then y, saved, carry; hn (and cn) for
  // rows whose last step this is. gx_pre: load_gx(s, tid).
  FASTRNN_HD void gates_forward(int s, int tid, int nthreads, const A* gx_pre) const {
    const int H = p.H, GH = G * p.H, R = rows(s), Rn = rows(s + 1);
    if (R == 0) return;
    const Step st = step(s);
    const int f = int(st.first);
    for (int idx = tid; idx < R * nu; idx += nthreads) {
      const int i = idx / nu, u = idx % nu, j = u0 + u;
      const size_t row = size_t(f + i);
      A x[G], hh[G], saved[kSavedArr];
      for (int g = 0; g < G; ++g) {
        x[g] = idx == tid ? gx_pre[g] : to_acc(a.gx[row * GH + g * H + j]);
        hh[g] = acc_s[size_t(i) * G * nu + g * nu + u];
        if (Cell::kRecurrentBias && a.b_hh != nullptr) hh[g] += to_acc(a.b_hh[g * H + j]);
      }
      A carry = A(0);
      if (Cell::kCellState) {
        carry = previous_packed_row(st, i) >= 0 ? carry_s[i * nu + u]
                                                : to_acc(a.c0[size_t(i) * H + j]);
      }
      const A h_prev = to_acc(x_s[size_t(i) * ld + j]);
      A params[kParamsArr];
      load_params(j, params);
      const A h = Cell::forward(x, hh, h_prev, carry, saved, params);
      if (Cell::kCellState) carry_s[i * nu + u] = carry;
      if (a.saved != nullptr) {  // null: no backward will read it
        for (int q = 0; q < Cell::kSaved; ++q) {
          a.saved[row * Cell::kSaved * H + q * H + j] = from_acc<T>(saved[q]);
        }
      }
      a.y[row * H + j] = from_acc<T>(h);
      if (i >= Rn) {
        a.hn[size_t(i) * H + j] = from_acc<T>(h);
        if (Cell::kCellState) a.cn[size_t(i) * H + j] = from_acc<T>(carry);
      }
    }
  }

  // What the backward gate math of one (row i, unit) of step st reads from global memory
  // that no block writes during the launch: grad_y, saved, y (h) and prev (Cell::kPrev:
  // h_prev from y or h0, or slot kPrevSlot of the previous row's saved or c0).
  struct RowInputs {
    A gy, h, prev;
    A saved[kSavedArr];
  };
  FASTRNN_HD void load_inputs(const Step& st, int idx, RowInputs& in) const {
    constexpr int S = Cell::kSaved;
    const int H = p.H, i = idx / nu, j = u0 + idx % nu;
    const size_t row = size_t(st.first + i);
    in.gy = to_acc(a.grad_y[row * H + j]);
    in.h = to_acc(a.y[row * H + j]);
    for (int q = 0; q < S; ++q) in.saved[q] = to_acc(a.saved[row * S * H + q * H + j]);
    in.prev = A(0);
    if constexpr (Cell::kPrev != PrevSource::kNone) {
      const int64_t prev = previous_packed_row(st, i);
      if constexpr (Cell::kPrev == PrevSource::kOutput) {
        in.prev = to_acc(prev >= 0 ? a.y[size_t(prev) * H + j] : a.h0[size_t(i) * H + j]);
      } else {
        in.prev = to_acc(prev >= 0 ? a.saved[size_t(prev) * S * H + Cell::kPrevSlot * H + j]
                                   : a.c0[size_t(i) * H + j]);
      }
    }
  }
  // Thread tid's first (row, unit) of iteration s, loaded ahead (before the grid barrier).
  FASTRNN_HD void load_inputs_ahead(int s, int tid, RowInputs& in) const {
    if (tid < rows(s) * nu) load_inputs(step(s), tid, in);
  }

  // Iteration s in [-1, T): rows of step s get their gradients; rows whose first step is
  // s+1 (i in [rows(s), rows(s+1))) get grad_h0 from this iteration's product.
  // ahead: load_inputs_ahead(s, tid).
  FASTRNN_HD void gates_backward(int s, int tid, int nthreads, const RowInputs& ahead) const {
    const Step st = step(s);
    const int H = p.H, GH = G * p.H, R = int(st.rows), Rn = rows(s + 1);
    const int Rmax = R > Rn ? R : Rn;
    const int f = int(st.first);
    for (int idx = tid; idx < Rmax * nu; idx += nthreads) {
      const int i = idx / nu, u = idx % nu, j = u0 + u;
      const A rec = i < Rn ? acc_s[i * nu + u] : A(0);
      A carry = A(0);
      if (Cell::kBackwardCarry && i < Rn) carry = carry_s[i * nu + u];
      if (i >= R) {
        a.grad_h0[size_t(i) * H + j] = from_acc<T>(Cell::h0_grad(rec, carry));
        continue;
      }
      RowInputs in;
      if (idx == tid) {
        in = ahead;
      } else {
        load_inputs(st, idx, in);
      }
      const size_t row = size_t(f + i);
      const A dh = (i < Rn ? rec : to_acc(a.grad_hn[size_t(i) * H + j])) + in.gy;
      if (Cell::kBackwardCarry && i >= Rn && a.grad_cn != nullptr) {
        carry = to_acc(a.grad_cn[size_t(i) * H + j]);
      }
      A dx[G], dgh[G], params[kParamsArr];
      load_params(j, params);
      Cell::backward(dh, carry, in.saved, in.h, in.prev, params, dx, dgh);
      for (int g = 0; g < G; ++g) {
        a.grad_gx[row * GH + g * H + j] = from_acc<T>(dx[g]);
        if (Cell::kSeparateDgh) a.grad_gh[row * GH + g * H + j] = from_acc<T>(dgh[g]);
      }
      if (Cell::kBackwardCarry) carry_s[i * nu + u] = carry;
      if (Cell::kCellState && previous_packed_row(st, i) < 0 && a.grad_c0 != nullptr) {
        a.grad_c0[size_t(i) * H + j] = from_acc<T>(carry);
      }
    }
  }
};

}  // namespace persistent
}  // namespace fastrnn
