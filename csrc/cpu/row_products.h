#pragma once
// Products of a few rows against a weight read where it lies, for the per-step products of
// the CPU walks and cell calls (gemm.h's StepGemm): with few rows, BLAS's kernels run far
// from the arithmetic's and the memory's limits (2 threads, AMD EPYC: sgemm of 8 rows by a
// [4096, 1024] weight takes 1.3 ms, where streaming the weight once takes 0.33), and these
// read each element of the weight once per row block, with no packing.
//
// Two layouts of the weight; each column block [c0, c1) of the result is computed alone
// (the caller splits the columns among threads), every sum in the same order on any split
// at a multiple of 16 columns, as StepGemm's:
// - rows_times_transposed: out [m, n] = a [m, K] @ w^T, w [n, K] with K contiguous (w_hh as
//   stored, for h @ w_hh^T): dot products over K, kDotColumns columns and up to kDotRows
//   rows at a time, each vector of lanes summed at the end; or, from a panel of rows,
//   packed_rows_times_transposed: a's rows packed, w's elements broadcast against them
//   (panel_gemm.h's kernel);
// - rows_times: out [m, n] = a [m, K] @ w, w [K, n] with n contiguous (w_hh for the
//   backward's dgh @ w_hh): each row of w's block of columns multiplied by every row's
//   element of a, K in blocks of kDepthBlock rows of w.
// With accumulate, out += the product. The dot products' vectors are panel_gemm.h's Simd (32
// bytes), rows_times' its WideSimd (64 bytes where the build has AVX-512), the packed rows'
// its panel kernel's. Built for AVX2 with FMA or more (kRowProductKernels); a portable
// build (SSE2) keeps BLAS, whose kernels choose the CPU's instructions at run time.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "panel_gemm.h"  // Simd, WideSimd, kVectorRegisters

namespace fastrnn {
namespace cpu {

#if defined(__AVX2__) && defined(__FMA__)
constexpr bool kRowProductKernels = true;
#else
constexpr bool kRowProductKernels = false;
#endif

// The fewest elements of a weight for which these kernels run StepGemm's products (gemm.h):
// below, BLAS's small products were faster (in the step grid at H = 64, B = 8 and 32:
// 10-30% slower on the kernels, whose sums over K = 64 are short).
constexpr int64_t kMinRowProductElements = 1 << 16;

// start + sum_{k < K} a[k] * w[k * w_stride], in order: the scalar tails of the kernels.
template <typename T>
T strided_dot(T start, const T* a, const T* w, int64_t w_stride, int64_t K) {
  for (int64_t k = 0; k < K; ++k) start += a[k] * w[k * w_stride];
  return start;
}

// Columns and rows of one dot-product block: its MR * NR vectors of sums, MR of a's and one
// of w's in registers (kVectorRegisters, panel_gemm.h).
constexpr int kDotColumns = 4;
constexpr int kDotRows = kVectorRegisters >= 32 ? 4 : 2;

// sums[j] = the sum of acc[j]'s lanes, j < kDotColumns.
template <typename T>
inline void lane_sums(const typename Simd<T>::Vec* acc, T* sums) {
  static_assert(kDotColumns == 4, "four vectors of sums: two rounds of pairwise additions");
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    __m256 a[4];
    std::memcpy(a, acc, sizeof a);
    const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    _mm_storeu_ps(sums, _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1)));
    return;
  } else if constexpr (std::is_same_v<T, double>) {
    __m256d a[4];
    std::memcpy(a, acc, sizeof a);
    const __m256d lo = _mm256_hadd_pd(a[0], a[1]), hi = _mm256_hadd_pd(a[2], a[3]);
    _mm256_storeu_pd(sums, _mm256_add_pd(_mm256_permute2f128_pd(lo, hi, 0x20),
                                         _mm256_permute2f128_pd(lo, hi, 0x31)));
    return;
  }
#endif
  for (int j = 0; j < kDotColumns; ++j) {
    T lanes[Simd<T>::kLanes];
    std::memcpy(lanes, &acc[j], sizeof lanes);
    sums[j] = T(0);
    for (T lane : lanes) sums[j] += lane;
  }
}

// A vector loaded from p, or stored to it (p needs no alignment). By value, so that the
// compiler keeps arrays of them in registers.
template <typename Vec, typename T>
inline Vec load_vector(const T* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T, typename Vec>
inline void store_vector(T* p, Vec v) {
  std::memcpy(p, &v, sizeof v);
}

// Makes the compiler hold v in a register from here on: without it, gcc folds each use of
// a loaded vector into its multiply-add as one more load (three loads per two multiply-adds
// where the loads limit, at half the multiply-add peak).
template <typename Vec>
inline void keep_in_register(Vec& v) {
#if defined(__AVX__)
  asm("" : "+x"(v));
#else
  (void)v;
#endif
}

// out[r, j] (+)= sum_k a[r, k] * w[j, k] for r < MR, j < kDotColumns.
template <typename T, int MR>
void dot_block(const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K, T* out,
               int64_t ldc, bool accumulate) {
  using Vec = typename Simd<T>::Vec;
  constexpr int V = Simd<T>::kLanes, NR = kDotColumns;
  Vec acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) acc[r][j] = Vec{};
  }
  const int64_t whole = K - K % V;
  for (int64_t k = 0; k < whole; k += V) {
    Vec row[MR];
    for (int r = 0; r < MR; ++r) row[r] = load_vector<Vec>(a + r * lda + k);
    for (int r = 0; r < MR; ++r) keep_in_register(row[r]);
    for (int j = 0; j < NR; ++j) {
      Vec column = load_vector<Vec>(w + j * ldw + k);
      keep_in_register(column);
      for (int r = 0; r < MR; ++r) acc[r][j] += row[r] * column;
    }
  }
  for (int r = 0; r < MR; ++r) {
    T sums[NR];
    lane_sums<T>(acc[r], sums);
    for (int j = 0; j < NR; ++j) {
      sums[j] = strided_dot(sums[j], a + r * lda + whole, w + j * ldw + whole, 1, K - whole);
      out[r * ldc + j] = accumulate ? out[r * ldc + j] + sums[j] : sums[j];
    }
  }
}

template <typename T>
void dot_rows(int rows, const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K, T* out,
              int64_t ldc, bool accumulate) {
  switch (rows) {
    case 1: return dot_block<T, 1>(a, lda, w, ldw, K, out, ldc, accumulate);
    case 2: return dot_block<T, 2>(a, lda, w, ldw, K, out, ldc, accumulate);
#if defined(__AVX512F__)
    case 3: return dot_block<T, 3>(a, lda, w, ldw, K, out, ldc, accumulate);
    case 4: return dot_block<T, 4>(a, lda, w, ldw, K, out, ldc, accumulate);
#endif
  }
}

// out[:, c0:c1] (+)= a @ w[c0:c1, :]^T: a [m, K] (rows lda apart), w [n, K] (rows ldw
// apart), out [m, n] (rows ldc apart).
template <typename T>
void rows_times_transposed(int64_t m, const T* a, int64_t lda, const T* w, int64_t ldw,
                           int64_t K, T* out, int64_t ldc, int64_t c0, int64_t c1,
                           bool accumulate) {
  int64_t c = c0;
  for (; c + kDotColumns <= c1; c += kDotColumns) {  // a block of w, then from the cache
    for (int64_t r = 0; r < m; r += kDotRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kDotRows, m - r));
      dot_rows(rows, a + r * lda, lda, w + c * ldw, ldw, K, out + r * ldc + c, ldc, accumulate);
    }
  }
  for (; c < c1; ++c) {  // the last (c1 - c0) % kDotColumns columns
    for (int64_t r = 0; r < m; ++r) {
      T& result = out[r * ldc + c];
      result = strided_dot(accumulate ? result : T(0), a + r * lda, w + c * ldw, 1, K);
    }
  }
}

// Products a @ w^T of kMinPackedRows (one panel of rows, kPanelWidth<T>) to kMaxPackedRows
// rows run as packed_rows_times_transposed's (StepGemm, gemm.h), where they were the dot
// products' (up to 32 rows) or BLAS's (above): a's rows packed once per product and thread
// into panels, each element of w broadcast against a panel's rows (as panel_gemm.h multiplies
// a weight's panels), where the dot products sum lanes at the end of every block and BLAS
// runs kernels tuned for larger products. The rows are packed where at least 80% of the
// panels' rows are a's (the zero rows cost as much): [20, 256] @ [256, 514], one thread, 66
// GFLOP/s against the dot products' 77; [31, ...] 102 against 77. One panel (then exactly
// kPanelWidth<T> rows) only by weights of kMinOnePanelElements or more: below, packing did
// not pay; by fewer than kMinPackedColumns columns not measured. Each thread packs the rows
// for itself: when one thread packed them for all, the others read them from its cache,
// and 256 columns did not pay (an RNN cell at B128 H256, 1.1-1.3x the time). Cell calls
// without grad, 2 threads, in-process alternated, median of 21, two runs, time with each
// thread's own packing against one shared (and the dot products below 512 columns): RNN
// H256 B32 0.90-0.96, B64 0.90-0.96, B128 0.97-1.00; LSTM H256 B32 0.88-0.99, B128
// 0.90-1.00; GRU H256 B32 0.90-0.99; RNN B32 H1024 0.89-0.98; LSTM B16 H512 0.95-0.99.
// Measured on AMD EPYC (Zen 4, AVX-512 build):
// - one thread, GFLOP/s, dot products vs packed: [32, 256] @ [256, 512] 82 vs 101, [16,
//   256] @ [256, 1024] 82 vs 100, [64, 256] @ [256, 512] 84 vs 102, [32, 1024] @ [1024,
//   2048] 76 vs 105; an AVX2 build (-march=znver3, on the same CPU), the same shapes, 67-70
//   vs 89-102;
// - cell calls without grad (both products and the gates), 2 threads, in-process shuffled,
//   median of 11-21, time against the old kernels' (dot products to 32 rows, BLAS above):
//   float32 B16 LSTM H256 1.02-1.07, RNN H256 1.10, LSTM H1024 0.89-0.91; B32 LSTM
//   H256 0.95-1.01, H512 0.78, H1024 0.82, GRU H1024 0.77, RNN H512 0.90, H1024 0.83; B64
//   LSTM H256 0.93, H1024 0.45, RNN H512 0.87; B128 LSTM H256 0.92, GRU H1024 0.65, RNN
//   H1024 0.71; float64 B8 LSTM H256 1.06, B16 0.99, B32 0.99, RNN B32 H512 0.85, LSTM B64
//   H512 0.85, RNN B128 H1024 0.88.
template <typename T>
constexpr int64_t kMinPackedRows = kPanelWidth<T>;
constexpr int64_t kMaxPackedRows = 128;
constexpr int64_t kMinOnePanelElements = 1 << 20;
constexpr int64_t kMinPackedColumns = 256;

// The panels of a [m, K] (rows lda apart): panels * K * kPanelWidth<T> elements, panel p
// holding rows [p * W, p * W + W) k-major (panel_gemm.h's layout), zero past row m.
template <typename T>
int64_t row_panels(int64_t m) {
  return (m + kPanelWidth<T> - 1) / kPanelWidth<T>;
}
template <typename T>
void pack_rows(int64_t m, const T* a, int64_t lda, int64_t K, T* panels) {
  constexpr int64_t W = kPanelWidth<T>;
  for (int64_t p = 0; p < row_panels<T>(m); ++p) {
    pack_panel(panels + p * K * W, K, 1, [&](int64_t c) -> const T* {
      return p * W + c < m ? a + (p * W + c) * lda : nullptr;
    });
  }
}

// out[:, c0:c1] (+)= a @ w[c0:c1, :]^T as rows_times_transposed, from a's panels (pack_rows
// of its m rows): w [n, K] (rows ldw apart), out [m, n] (rows ldc apart). w's rows in blocks
// of kBroadcastRows from c0 through panel_gemm.h's panel_product, w's row pointers as its
// rows (broadcast) and each of a's panels as its panel; the sums stored transposed. A
// block's rows fix the order of its sums (kPanelChains), and StepGemm splits the columns at
// multiples of 16, so every column falls in a block of the same size on any split: a short
// block only at the matrix's last columns. 8 rows where the registers hold them (AVX-512:
// one sum each, half the panel loads per multiply-add of 4 rows' two), else 4. One thread,
// AMD EPYC (Zen 4), GFLOP/s, 4 rows vs 8, two runs: [32, 256] @ [256, 1024] 84-97 vs 92-104,
// [16, 256] @ [256, 1024] 94-99 vs 102-104, [128, 256] @ [256, 256] 80-104 vs 87-107,
// [32, 1024] @ [1024, 4096] 92-100 vs 97-101.
constexpr int kBroadcastRows = kMaxPanelRows >= 8 ? 8 : 4;

template <typename T>
void packed_rows_times_transposed(int64_t m, const T* panels, const T* w, int64_t ldw,
                                  int64_t K, T* out, int64_t ldc, int64_t c0, int64_t c1,
                                  bool accumulate) {
  constexpr int W = kPanelWidth<T>, MR = kBroadcastRows;
  static_assert(16 % MR == 0 && MR <= kMaxPanelRows, "blocks aligned with StepGemm's split");
  T sums[MR * W];
  const T* rows[MR];
  for (int64_t c = c0; c < c1; c += MR) {
    const int count = static_cast<int>(std::min<int64_t>(MR, c1 - c));
    for (int j = 0; j < count; ++j) rows[j] = w + (c + j) * ldw;
    for (int64_t p = 0; p < row_panels<T>(m); ++p) {
      panel_product(count, rows, panels + p * K * W, K, sums);
      for (int64_t r = p * W; r < std::min<int64_t>(m, p * W + W); ++r) {
        for (int j = 0; j < count; ++j) {
          const T sum = sums[j * W + (r - p * W)];
          T& result = out[r * ldc + c + j];
          result = accumulate ? result + sum : sum;
        }
      }
    }
  }
}

// rows_times' blocks are in panel_gemm.h's WideSimd: each sum runs over k in order in any
// vector. One thread, AMD EPYC (Zen 4), a [K, n] weight by m rows, GFLOP/s, 32-byte vectors
// vs 64: m = 8, K = 256, n = 256 115 vs 115, n = 1024 84 vs 112; m = 32, K = 1024, n = 1024
// 76 vs 106; m = 2, K = 256, n = 1024 67 vs 79. The dot products keep 32 bytes: with 64
// they were slower there (m = 1 38-57 vs 19-26, m = 8 K = 256 83-85 vs 74-75), summing
// twice the lanes at the end of every block.
// out[r, c : c + NC * V] (+)= sum_{k < K} a[r, k] * w[k, c : c + NC * V] for r < MR: NC
// vectors of columns (V = WideSimd<T>::kLanes), each w row's vectors loaded once for the MR
// rows' broadcasts.
template <typename T, int MR, int NC>
void axpy_block(const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K, T* out,
                int64_t ldc, bool accumulate) {
  using Vec = typename WideSimd<T>::Vec;
  constexpr int V = WideSimd<T>::kLanes;
  Vec acc[MR][NC];
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < NC; ++q) {
      acc[r][q] = accumulate ? load_vector<Vec>(out + r * ldc + q * V) : Vec{};
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    Vec column[NC];
    for (int q = 0; q < NC; ++q) column[q] = load_vector<Vec>(w + k * ldw + q * V);
    for (int q = 0; q < NC; ++q) keep_in_register(column[q]);
    for (int r = 0; r < MR; ++r) {
      const T x = a[r * lda + k];
      for (int q = 0; q < NC; ++q) acc[r][q] += x * column[q];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < NC; ++q) store_vector(out + r * ldc + q * V, acc[r][q]);
  }
}

// Rows of one axpy block, and the vectors of columns for a block of `rows` rows: about 16
// sums in registers (of 32 with AVX-512; 8 of 16 with AVX2).
#if defined(__AVX512F__)
constexpr int kAxpyRows = 8;
constexpr int axpy_vectors(int rows) { return rows <= 2 ? 8 : rows <= 4 ? 4 : 2; }
#else
constexpr int kAxpyRows = 4;
constexpr int axpy_vectors(int rows) { return rows <= 2 ? 4 : 2; }
#endif

// axpy_block over columns [c0, c1) of the result, `rows` <= kAxpyRows rows: blocks of
// axpy_vectors(MR) vectors, then of one vector, then the last columns one at a time.
template <typename T, int MR>
void axpy_rows(const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K, T* out,
               int64_t ldc, int64_t c0, int64_t c1, bool accumulate) {
  constexpr int V = WideSimd<T>::kLanes, NC = axpy_vectors(MR);
  int64_t c = c0;
  for (; c + NC * V <= c1; c += NC * V) {
    axpy_block<T, MR, NC>(a, lda, w + c, ldw, K, out + c, ldc, accumulate);
  }
  for (; c + V <= c1; c += V) axpy_block<T, MR, 1>(a, lda, w + c, ldw, K, out + c, ldc, accumulate);
  for (int r = 0; r < MR; ++r) {
    for (int64_t j = c; j < c1; ++j) {
      T& result = out[r * ldc + j];
      result = strided_dot(accumulate ? result : T(0), a + r * lda, w + j, ldw, K);
    }
  }
}

template <typename T>
void axpy_row_block(int rows, const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K,
                    T* out, int64_t ldc, int64_t c0, int64_t c1, bool accumulate) {
  switch (rows) {
    case 1: return axpy_rows<T, 1>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 2: return axpy_rows<T, 2>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 3: return axpy_rows<T, 3>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 4: return axpy_rows<T, 4>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
#if defined(__AVX512F__)
    case 5: return axpy_rows<T, 5>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 6: return axpy_rows<T, 6>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 7: return axpy_rows<T, 7>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
    case 8: return axpy_rows<T, 8>(a, lda, w, ldw, K, out, ldc, c0, c1, accumulate);
#endif
  }
}

// The depth of one block of rows_times: the row blocks after the first read its
// kDepthBlock rows of w from the cache where they fit (1 MB of float at 1024 columns).
constexpr int64_t kDepthBlock = 256;

// out[:, c0:c1] (+)= a @ w[:, c0:c1]: a [m, K] (rows lda apart), w [K, n] (rows ldw apart),
// out [m, n] (rows ldc apart).
template <typename T>
void rows_times(int64_t m, const T* a, int64_t lda, const T* w, int64_t ldw, int64_t K,
                T* out, int64_t ldc, int64_t c0, int64_t c1, bool accumulate) {
  if (K == 0 && !accumulate) {
    for (int64_t r = 0; r < m; ++r) std::fill(out + r * ldc + c0, out + r * ldc + c1, T(0));
  }
  for (int64_t k0 = 0; k0 < K; k0 += kDepthBlock) {
    const int64_t depth = std::min(kDepthBlock, K - k0);
    for (int64_t r = 0; r < m; r += kAxpyRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kAxpyRows, m - r));
      axpy_row_block(rows, a + r * lda + k0, lda, w + k0 * ldw, ldw, depth, out + r * ldc, ldc,
                     c0, c1, accumulate || k0 > 0);
    }
  }
}

}  // namespace cpu
}  // namespace fastrnn
