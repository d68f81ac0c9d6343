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

namespace fastrnn {
namespace cpu {

// 32 bytes of T, kept in one AVX register where the CPU has AVX, else in two SSE registers.
template <typename T>
struct Simd {
  static constexpr int kLanes = 32 / sizeof(T);
  typedef T Vec __attribute__((vector_size(32)));
};

template <typename T>
constexpr int kPanelWidth = 2 * Simd<T>::kLanes;  // 16 floats, 8 doubles

// At most this many rows per panel_product call: 2 * kMaxPanelRows accumulators, two panel
// vectors and a broadcast fit the 16 AVX registers.
constexpr int kMaxPanelRows = 6;

// Calls fn(r0, n) over rows [0, rows) in the fewest blocks of at most kMaxPanelRows rows,
// as even as possible (8 rows: 4 + 4, not 6 + 2): a short block keeps too few
// accumulators busy to hide the multiply-add latency.
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
template <typename T, typename Column>
void pack_panel(T* panel, int64_t K, int64_t k_stride, const Column& column) {
  constexpr int W = kPanelWidth<T>;
  for (int64_t c = 0; c < W; ++c) {
    const T* src = column(c);
    for (int64_t k = 0; k < K; ++k) panel[k * W + c] = src ? src[k * k_stride] : T(0);
  }
}

// out[r * kPanelWidth + c] = sum_k a[r][k] * panel[k * kPanelWidth + c] for r < MR:
// a: MR row pointers, each K long; panel: [K, kPanelWidth]; out: [MR, kPanelWidth].
// The sum runs over k in order, one multiply-add per term.
template <typename T, int MR>
void panel_product_rows(const T* const* a, const T* panel, int64_t K, T* out) {
  using Vec = typename Simd<T>::Vec;
  constexpr int V = Simd<T>::kLanes;
  Vec lo[MR], hi[MR];
  const T* rows[MR];
  for (int r = 0; r < MR; ++r) {
    lo[r] = Vec{};
    hi[r] = Vec{};
    rows[r] = a[r];
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < K; ++k) {
    Vec p_lo, p_hi;
    std::memcpy(&p_lo, panel + k * 2 * V, sizeof(Vec));
    std::memcpy(&p_hi, panel + k * 2 * V + V, sizeof(Vec));
    for (int r = 0; r < MR; ++r) {
      const T x = rows[r][k];
      lo[r] += x * p_lo;
      hi[r] += x * p_hi;
    }
  }
  for (int r = 0; r < MR; ++r) {
    std::memcpy(out + r * 2 * V, &lo[r], sizeof(Vec));
    std::memcpy(out + r * 2 * V + V, &hi[r], sizeof(Vec));
  }
}

// panel_product_rows for 1 <= rows <= kMaxPanelRows.
template <typename T>
void panel_product(int rows, const T* const* a, const T* panel, int64_t K, T* out) {
  switch (rows) {
    case 1: return panel_product_rows<T, 1>(a, panel, K, out);
    case 2: return panel_product_rows<T, 2>(a, panel, K, out);
    case 3: return panel_product_rows<T, 3>(a, panel, K, out);
    case 4: return panel_product_rows<T, 4>(a, panel, K, out);
    case 5: return panel_product_rows<T, 5>(a, panel, K, out);
    default: return panel_product_rows<T, kMaxPanelRows>(a, panel, K, out);
  }
}

}  // namespace cpu
}  // namespace fastrnn
