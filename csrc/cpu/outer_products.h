#pragma once
// Sums of outer products, out [M, N] = a^T @ b = sum over k < K of a[k]^T b[k], for a: [K, M]
// and b: [K, N], rows of the same K steps: a weight's gradient, the gradient of a product's
// rows against the rows it multiplied (a cell's grad_gates^T @ x, with K its batch).
// BLAS runs this transposed product far below its limits at a step's depths: 2 threads, AMD
// EPYC (Zen 4, AVX-512 build), GFLOP/s, [M, N] at depth K, MKL through at::mm_out against
// this kernel: [1024, 256] K = 32 140 vs 178, [1024, 1024] K = 32 126 vs 184, [256, 64]
// K = 32 93 vs 163, [1024, 256] K = 8 114 vs 123, [768, 256] K = 64 180 vs 199, [1024, 256]
// K = 256 183 vs 195, [4096, 1024] K = 256 181 vs 211.
//
// The kernel is panel_gemm.h's register block turned around: MR of out's rows (kMaxPanelRows)
// by kPanelWidth columns in registers, their terms a[k, r] broadcast against b[k]'s columns.
// b's rows are packed into strips of kPanelWidth columns ([K, kPanelWidth] each, read from
// the cache by every row block: b's rows read in place lie a multiple of 4 KB apart at 1024
// columns and evict each other, 124 GFLOP/s above against 168 packed), and each row
// block's terms into [K, MR]. Every sum runs over k in order, one multiply-add per term:
// the result does not depend on how the callers split out's rows among threads.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "row_products.h"  // load_vector, store_vector, keep_in_register

namespace fastrnn {
namespace cpu {

// The deepest product these kernels take: a strip of floats then takes 16 KB. Deeper, MKL
// was faster (2 threads, AMD EPYC, [1024, 256] at K = 3200, 186 against 156 GFLOP/s for
// blocks of 256 steps added up; [2048, 512] at K = 6336, 196 against 186).
constexpr int64_t kMaxOuterDepth = 256;

// out[r, c] = sum_{k < K} terms[k * MR + r] * strip[k * W + c] for r < MR, c < W (W =
// kPanelWidth<T>): terms [K, MR], strip [K, W], out rows ldc apart. A strip row in
// panel_gemm.h's PanelVector, as the panels' products hold theirs. With add, out[r, c] +
// the sum: out holds a sum of earlier products, and the result is the one that adding this
// product to it afterwards gives, bit for bit.
template <typename T, int MR>
void outer_block(const T* terms, const T* strip, int64_t K, T* out, int64_t ldc, bool add) {
  using Vec = typename PanelVector<T, MR>::Vec;
  constexpr int NV = kPanelVectors<MR>, V = kPanelWidth<T> / NV;
  Vec sums[MR][NV];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) sums[r][v] = Vec{};
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec p[NV];
    for (int v = 0; v < NV; ++v) {
      p[v] = load_vector<Vec>(strip + (k * NV + v) * V);
      keep_in_register(p[v]);
    }
    for (int r = 0; r < MR; ++r) {
      const T term = terms[k * MR + r];
      for (int v = 0; v < NV; ++v) sums[r][v] += term * p[v];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) {
      T* to = out + r * ldc + v * V;
      store_vector(to, add ? load_vector<Vec>(to) + sums[r][v] : sums[r][v]);
    }
  }
}

// to[0 : L] = from[0 : count], then zeros: count <= L, a copy of constant size when whole,
// inlined (a library call per copy: one thread, [256, 256] at K = 32 51 against 45 us,
// [256, 64] 17 against 12).
template <int L, typename T>
inline void copy_padded(const T* from, int64_t count, T* to) {
  if (count == L) {
    std::memcpy(to, from, L * sizeof(T));
    return;
  }
  std::memcpy(to, from, count * sizeof(T));
  std::fill(to + count, to + L, T(0));
}

// Rows [r0, r1) of out [M, N] (rows ldc apart) = a^T @ b: a [K, M] (rows lda apart), b [K, N]
// (rows ldb apart), K <= kMaxOuterDepth; with add, out + a^T @ b (outer_block). One thread's
// share: the callers split out's rows at multiples of kMaxPanelRows (only out's last row
// block is then short, on any split).
template <typename T>
void sum_of_outer_products(int64_t K, int64_t N, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* out, int64_t ldc, int64_t r0, int64_t r1,
                           bool add = false) {
  constexpr int MR = kMaxPanelRows, W = kPanelWidth<T>;
  const int64_t strips = (N + W - 1) / W;
  thread_local std::vector<T> packed;  // b's strips, then a row block's terms
  packed.resize(K * (strips * W + MR));
  T* strip = packed.data();  // strip s: [K, W] at strip + s * K * W, zero past N
  T* terms = strip + strips * K * W;  // [K, MR], zero past r1
  for (int64_t s = 0; s < strips; ++s) {
    const int64_t c0 = s * W, width = std::min<int64_t>(W, N - c0);
    for (int64_t k = 0; k < K; ++k) {
      copy_padded<W>(b + k * ldb + c0, width, strip + (s * K + k) * W);
    }
  }
  T tile[MR * W];  // a block at out's edges, computed whole, stored in part
  for (int64_t i = r0; i < r1; i += MR) {
    const int64_t rows = std::min<int64_t>(MR, r1 - i);
    for (int64_t k = 0; k < K; ++k) copy_padded<MR>(a + k * lda + i, rows, terms + k * MR);
    for (int64_t s = 0; s < strips; ++s) {
      const int64_t c0 = s * W, width = std::min<int64_t>(W, N - c0);
      T* corner = out + i * ldc + c0;
      const bool whole = rows == MR && width == W;
      outer_block<T, MR>(terms, strip + s * K * W, K, whole ? corner : tile, whole ? ldc : W,
                         whole && add);
      if (whole) continue;
      for (int64_t r = 0; r < rows; ++r) {
        T* to = corner + r * ldc;
        const T* sum = tile + r * W;
        if (!add) std::memcpy(to, sum, width * sizeof(T));
        for (int64_t c = 0; add && c < width; ++c) to[c] += sum[c];
      }
    }
  }
}

// Part `part` of `parts` of sum_of_outer_products over out's M rows: out's row blocks
// shared out evenly, as rows [r0, r1) for the call.
inline std::pair<int64_t, int64_t> outer_rows_share(int64_t M, int64_t part, int64_t parts) {
  constexpr int64_t MR = kMaxPanelRows;
  const int64_t blocks = (M + MR - 1) / MR;
  return {std::min(M, blocks * part / parts * MR), std::min(M, blocks * (part + 1) / parts * MR)};
}

}  // namespace cpu
}  // namespace fastrnn
