#pragma once
// Register-blocked products against a weight packed once into column panels, for the fused
// CPU walks: a thread keeps its own panels in its core's cache from step to step and
// multiplies a few rows at a time, with no call into BLAS and no parallel region per step.
//
// A panel holds kPanelWidth columns of a [K, n] matrix, k-major: panel[k * kPanelWidth + c].
// Columns past the matrix's last are zero.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastrnn {
namespace cpu {

// Bytes of T as one vector: kept in one register where the CPU has it (AVX for 32 bytes,
// AVX-512 for 64), else in several narrower ones.
template <typename T, int Bytes>
struct Vector {
  static constexpr int kLanes = Bytes / sizeof(T);
  typedef T Vec __attribute__((vector_size(Bytes)));
};

// 32 bytes of T: one AVX register where the CPU has AVX, else two SSE registers.
template <typename T>
using Simd = Vector<T, 32>;

template <typename T>
constexpr int kPanelWidth = 2 * Simd<T>::kLanes;  // 16 floats, 8 doubles

// The vector registers of the build: AVX-512 has 32 of 64 bytes, AVX2 16 of 32.
#if defined(__AVX512F__)
constexpr int kVectorRegisters = 32;
constexpr int kWideVectorBytes = 64;
#else
constexpr int kVectorRegisters = 16;
constexpr int kWideVectorBytes = 32;
#endif

// The widest vector of T the build has: where 64 bytes, the kernels that take it (the panel
// products from 4 rows, outer_products.h's blocks, row_products.h's axpy blocks) do half the
// instructions of 32-byte ones; where a core has two 512-bit FMA units (Intel Xeon, not
// measured here), 32-byte vectors reach at most half its multiply-add rate.
template <typename T>
using WideSimd = Vector<T, kWideVectorBytes>;

// At most this many rows per panel_product call: 2 * kMaxPanelRows accumulators, two panel
// vectors and a broadcast fit the registers (15 of AVX2's 16 at 6 rows, 19 of AVX-512's 32
// at 8, in 32-byte vectors; 10 in 64-byte ones). More rows per call read each panel vector
// for more multiply-adds, and 16 rows are two calls of 8, not 6 + 5 + 5. One thread, AMD
// EPYC (Zen 4), GFLOP/s, packed panel over K = 256 / K = 64 / 8 spans of 32 rows 1 KB
// apart: MR = 5 104 / 109 / 102, 6 115 / 110 / 107, 8 113 / 105 / 110 (one sum each; the
// FMA units' peak is 117).
constexpr int kMaxPanelRows = kVectorRegisters == 32 ? 8 : 6;

// Calls fn(r0, n) over rows [0, rows) in the fewest blocks of at most kMaxPanelRows rows,
// as even as possible (with 6 at most, 8 rows are 4 + 4, not 6 + 2): a short block keeps
// too few accumulators busy to hide the multiply-add latency.
template <typename F>
void for_each_row_block(int64_t rows, const F& fn) {
  int64_t blocks = (rows + kMaxPanelRows - 1) / kMaxPanelRows;
  for (int64_t r0 = 0; r0 < rows; --blocks) {
    const int n = static_cast<int>((rows - r0 + blocks - 1) / blocks);
    fn(r0, n);
    r0 += n;
  }
}

// panel[k * kPanelWidth + c] = column(c)[k * k_stride], or 0 where column(c) is null:
// column(c) points at element k = 0 of column c, or is null past the matrix's last column.
// Row by row of the panel, so that each of its cache lines is written whole at once (column
// by column, a weight's panels of 16 MB took 33 ms to pack by strided columns, 4.3 ms by
// contiguous ones; row by row 5.5 and 3.4, one thread, AMD EPYC). Contiguous columns
// (k_stride 1) go W x W tiles at a time: each column's W elements copied into the tile
// whole, then the tile's transpose stored as W panel rows, where element by element every
// load is a column's own (one thread, AMD EPYC (Zen 4), pack_rows of [m, K], us, element by
// element vs tiles: [128, 256] 11.8 vs 6.7, [32, 256] 2.4 vs 1.6, [64, 1024] 45.5 vs 15.3).
template <typename T, typename Column>
void pack_panel(T* panel, int64_t K, int64_t k_stride, const Column& column) {
  constexpr int W = kPanelWidth<T>;
  const T* src[W];
  for (int c = 0; c < W; ++c) src[c] = column(c);
  const int64_t tiled = k_stride == 1 ? K - K % W : 0;  // the depth packed in tiles
  for (int64_t k0 = 0; k0 < tiled; k0 += W) {
    T tile[W][W];  // tile[c]: column c's elements k0 .. k0 + W - 1
    for (int c = 0; c < W; ++c) {
      if (src[c]) {
        std::memcpy(tile[c], src[c] + k0, sizeof tile[c]);
      } else {
        std::fill(tile[c], tile[c] + W, T(0));
      }
    }
    for (int k = 0; k < W; ++k) {
      for (int c = 0; c < W; ++c) panel[(k0 + k) * W + c] = tile[c][k];
    }
  }
  for (int64_t k = tiled; k < K; ++k) {
    for (int c = 0; c < W; ++c) panel[k * W + c] = src[c] ? src[c][k * k_stride] : T(0);
  }
}

// How many sums per output vector panel_product_rows keeps for MR rows: two up to 4 rows
// (where their 4 * MR accumulators, two panel vectors and a broadcast fit the registers),
// else one. A multiply-add waits 4 cycles for its sum, so 2 * MR of them in flight keep the
// two FMA units busy only from MR = 4. One thread, AMD EPYC (Zen 4, AVX-512 build), K =
// 256, 512 KB of panels, GFLOP/s, one sum vs two: MR = 1 33 vs 49, 2 58 vs 83, 3 86 vs
// 107. Panels over K = 256 / K = 64 / 8 spans of 32 rows 1 KB apart, one vs two: MR = 4
// 108 / 107 / 94 vs 113 / 103 / 80 (two kept: the step products' blocks, packed); from 5
// rows two were slower: MR = 5 104 / 109 / 102 vs 97 / 90 / 89, 6 115 / 110 / 107 vs 97 /
// 89 / 92.
template <int MR>
constexpr int kPanelChains = MR <= 4 && 4 * MR + 3 <= kVectorRegisters ? 2 : 1;

// How many vectors a block of MR rows holds each of its panel rows in (kPanelWidth lanes, 64
// bytes): one WideSimd where it has 64 bytes and the block has 4 rows or more, else two of
// Simd's 32 bytes. Each lane's sum is the same sequence of multiply-adds either way, so the
// results are equal bit for bit. One thread, AMD EPYC (Zen 4, whose 512-bit FMA is two
// 256-bit halves), 512 KB of panels, GFLOP/s, two 32-byte vectors vs one 64-byte, K = 256:
// MR = 3 104 vs 86, 4 110 vs 113, 6 109 vs 116, 8 110 vs 115; K = 64: MR = 4 103 vs 105, 8
// 107 vs 102-110. (On cores with two 512-bit FMA units, one sum per row keeps fewer than
// the 8 multiply-adds in flight that they need below 8 rows: not tuned there.)
template <int MR>
constexpr int kPanelVectors = kWideVectorBytes == 64 && MR >= 4 ? 1 : 2;
template <typename T, int MR>
using PanelVector = Vector<T, 64 / kPanelVectors<MR>>;

// One run of a product's depth: MR row pointers a, each K long, against K rows of a panel
// (kPanelWidth columns, row k at panel + k * ldp: packed, or a matrix read in place).
template <typename T>
struct PanelSpan {
  const T* const* a;
  const T* panel;
  int64_t K;
  int64_t ldp = kPanelWidth<T>;
};

// out[r * kPanelWidth + c] = sum over the spans of sum_k a[r][k] * panel[k * ldp + c]
// for r < MR: out: [MR, kPanelWidth]. With C = kPanelChains<MR> sums per output, sum c takes
// a span's k = c, c + C, ... in order, one multiply-add per term (its last K % C terms into
// sum 0), and out is their sum.
template <typename T, int MR>
void panel_product_rows(const PanelSpan<T>* spans, int count, T* out) {
  using Vec = typename PanelVector<T, MR>::Vec;
  constexpr int NV = kPanelVectors<MR>, V = kPanelWidth<T> / NV, C = kPanelChains<MR>;
  Vec sums[C][MR][NV];  // sums[c][r][v]: lanes [v * V, v * V + V) of row r's sum c
  for (int c = 0; c < C; ++c) {
    for (int r = 0; r < MR; ++r) {
      for (int v = 0; v < NV; ++v) sums[c][r][v] = Vec{};
    }
  }
  for (int span = 0; span < count; ++span) {
    const T* rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = spans[span].a[r];
    const T* panel = spans[span].panel;
    const int64_t K = spans[span].K, ldp = spans[span].ldp;
    // Adds the terms of depth k to sum c.
    const auto add_term = [&](int c, int64_t k) {
      Vec p[NV];
      for (int v = 0; v < NV; ++v) std::memcpy(&p[v], panel + k * ldp + v * V, sizeof(Vec));
      for (int r = 0; r < MR; ++r) {
        const T x = rows[r][k];
        for (int v = 0; v < NV; ++v) sums[c][r][v] += x * p[v];
      }
    };
    const int64_t whole = K - K % C;
#pragma GCC unroll 4
    for (int64_t k = 0; k < whole; k += C) {
      for (int c = 0; c < C; ++c) add_term(c, k + c);
    }
    for (int64_t k = whole; k < K; ++k) add_term(0, k);
  }
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) {
      for (int c = 1; c < C; ++c) sums[0][r][v] += sums[c][r][v];
      std::memcpy(out + r * kPanelWidth<T> + v * V, &sums[0][r][v], sizeof(Vec));
    }
  }
}

// Calls fn(std::integral_constant<int, rows>{}) for 1 <= rows <= kMaxPanelRows: a kernel
// instantiated for the block's row count.
template <int MR = 1, typename F>
void with_panel_rows(int rows, const F& fn) {
  if constexpr (MR < kMaxPanelRows) {
    if (rows > MR) return with_panel_rows<MR + 1>(rows, fn);
  }
  fn(std::integral_constant<int, MR>{});
}

// panel_product_rows for 1 <= rows <= kMaxPanelRows, over count spans.
template <typename T>
void panel_product(int rows, const PanelSpan<T>* spans, int count, T* out) {
  with_panel_rows(rows, [&](auto mr) { panel_product_rows<T, mr()>(spans, count, out); });
}

// One span: out = a @ panel over depth K.
template <typename T>
void panel_product(int rows, const T* const* a, const T* panel, int64_t K, T* out) {
  const PanelSpan<T> span{a, panel, K};
  panel_product(rows, &span, 1, out);
}

}  // namespace cpu
}  // namespace fastrnn
