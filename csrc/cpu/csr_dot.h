#pragma once
// Dot products of a CSR row with a vector, for the sparse walk (sparse_walk.h): a row's
// nonzeros [k0, k1) have columns col (16-bit or 32-bit indices) and values; the result is
// sum_k values[k] * h[col[k]] in the accumulation type. Eight partial sums, so that the
// additions need not wait on each other, always formed and added in the same order, so
// results do not depend on the thread count.
//
// Measured on the walk of a reservoir (2000 units, 10% nonzeros, batch 1, 10,000 steps,
// AMD EPYC, .so files alternated, best of 3 per run):
// - row_dot_simd against csr_dot: float32 0.96-1.06 s against 1.30-1.32 s on 1 thread,
//   0.50-0.60 s against 0.69-0.79 s on 2; float64 1.42-1.48 s against 1.65-1.85 s on 1;
// - gather instructions (vgatherdps, from gcc's vectorised csr_dot) ran the walk 1.7x
//   slower than csr_dot; prefetching the values and indices 512 bytes ahead slowed csr_dot,
//   and prefetching the values 512 or 2048 bytes ahead did not speed row_dot_simd's float64
//   (bound by streaming its values: 3.2 MB a step).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if (defined(__AVX2__) && defined(__FMA__)) || defined(__BMI__)
#include <immintrin.h>
#endif

#include "units.h"  // acc_t

#if defined(__GNUC__) && !defined(__clang__)
#define FASTRNN_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define FASTRNN_NO_VECTORIZE
#endif

namespace fastrnn {
namespace cpu {

// The 16-bit index at bit 16 * q of a 64-bit word.
inline uint64_t packed_column(uint64_t packed, unsigned q) {
#if defined(__BMI__)
  return _bextr_u64(packed, 16 * q, 16);  // one instruction, not a shift and a move
#else
  return (packed >> (16 * q)) & 0xffff;
#endif
}

// The portable version, and the one for bfloat16 and float16: scalar, sum[q] takes the
// nonzeros k0 + q, k0 + q + 8, ...; the sums are then added in halves.
template <typename T, typename Index>
FASTRNN_NO_VECTORIZE acc_t<T> csr_dot(const Index* col, const T* values, int64_t k0,
                                      int64_t k1, const T* h) {
  using A = acc_t<T>;
  constexpr int kSums = 8;
  A sum[kSums] = {};
  int64_t k = k0;
  for (; k + kSums <= k1; k += kSums) {
    if constexpr (sizeof(Index) == 2) {
      // the column indices four at a time through a general register
      uint64_t packed[kSums / 4];
      std::memcpy(packed, col + k, sizeof packed);
      for (int q = 0; q < kSums; ++q) {
        sum[q] += A(values[k + q]) * A(h[packed_column(packed[q / 4], q % 4)]);
      }
    } else {
      for (int q = 0; q < kSums; ++q) sum[q] += A(values[k + q]) * A(h[col[k + q]]);
    }
  }
  for (int q = 0; k < k1; ++k, ++q) sum[q] += A(values[k]) * A(h[col[k]]);
  for (int width = kSums / 2; width > 0; width /= 2) {
    for (int q = 0; q < width; ++q) sum[q] += sum[q + width];
  }
  return sum[0];
}

#if defined(__AVX2__) && defined(__FMA__)
// h[c0], .., h[c3] in the lanes of one vector.
inline __m128 columns_vector(const float* h, uint64_t c0, uint64_t c1, uint64_t c2,
                             uint64_t c3) {
  __m128 v = _mm_load_ss(h + c0);
  v = _mm_insert_ps(v, _mm_load_ss(h + c1), 0x10);
  v = _mm_insert_ps(v, _mm_load_ss(h + c2), 0x20);
  return _mm_insert_ps(v, _mm_load_ss(h + c3), 0x30);
}
inline __m256d columns_vector(const double* h, uint64_t c0, uint64_t c1, uint64_t c2,
                              uint64_t c3) {
  const __m128d lo = _mm_loadh_pd(_mm_load_sd(h + c0), h + c1);
  const __m128d hi = _mm_loadh_pd(_mm_load_sd(h + c2), h + c3);
  return _mm256_insertf128_pd(_mm256_castpd128_pd256(lo), hi, 1);
}

// h[col[0..4)] in one vector. 16-bit indices come four to a 64-bit load: a quarter of the
// loads (the walk above, float32, 1 thread: 0.96-1.06 s against 1.16-1.19 s with a load
// per index).
template <typename T, typename Index>
inline auto load_columns(const T* h, const Index* col) {
  if constexpr (sizeof(Index) == 2) {
    uint64_t packed;
    std::memcpy(&packed, col, sizeof packed);
#if defined(__GNUC__)
    asm("" : "+r"(packed));  // one load, kept in a register: gcc folded it into each bextr
#endif
    return columns_vector(h, packed_column(packed, 0), packed_column(packed, 1),
                          packed_column(packed, 2), packed_column(packed, 3));
  } else {
    return columns_vector(h, col[0], col[1], col[2], col[3]);
  }
}

// load_columns for the nonzeros k + q, .., k + q + 3 of a row's last k1 - k < 8: those past
// k1 repeat the row's last column (a valid index; their lanes are blended away).
template <typename T, typename Index>
inline auto load_tail(const T* h, const Index* col, int64_t k, int64_t k1, int64_t q) {
  const Index c[4] = {col[std::min(k + q, k1 - 1)], col[std::min(k + q + 1, k1 - 1)],
                      col[std::min(k + q + 2, k1 - 1)], col[std::min(k + q + 3, k1 - 1)]};
  return load_columns(h, c);
}

// csr_dot with its eight sums as the lanes of vectors: the values come eight to a load and
// their products in one fused multiply-add; h's elements are loaded one by one into the
// lanes. A row's last k1 - k0 mod 8 nonzeros go to the first lanes only (masked loads of
// the values, and a blend, so that no lane takes 0 * inf).
template <typename Index>
float row_dot_simd(const Index* col, const float* values, int64_t k0, int64_t k1,
                   const float* h) {
  __m256 sum = _mm256_setzero_ps();  // lane q: csr_dot's sum[q]
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const __m256 hk = _mm256_set_m128(load_columns(h, col + k + 4), load_columns(h, col + k));
    sum = _mm256_fmadd_ps(_mm256_loadu_ps(values + k), hk, sum);
  }
  if (k < k1) {
    const __m256i first = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(k1 - k)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 hk = _mm256_set_m128(load_tail(h, col, k, k1, 4), load_tail(h, col, k, k1, 0));
    sum = _mm256_blendv_ps(sum, _mm256_fmadd_ps(_mm256_maskload_ps(values + k, first), hk, sum),
                           _mm256_castsi256_ps(first));
  }
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));                   // sum[q] += sum[q + 2]
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));  // sum[0] + sum[1]
}

template <typename Index>
double row_dot_simd(const Index* col, const double* values, int64_t k0, int64_t k1,
                    const double* h) {
  __m256d sum0 = _mm256_setzero_pd(), sum1 = _mm256_setzero_pd();  // sum[0..4), sum[4..8)
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    sum0 = _mm256_fmadd_pd(_mm256_loadu_pd(values + k), load_columns(h, col + k), sum0);
    sum1 = _mm256_fmadd_pd(_mm256_loadu_pd(values + k + 4), load_columns(h, col + k + 4), sum1);
  }
  if (k < k1) {
    const __m256i rest = _mm256_set1_epi64x(k1 - k);
    const __m256i first0 = _mm256_cmpgt_epi64(rest, _mm256_setr_epi64x(0, 1, 2, 3));
    const __m256i first1 = _mm256_cmpgt_epi64(rest, _mm256_setr_epi64x(4, 5, 6, 7));
    const __m256d v0 = _mm256_maskload_pd(values + k, first0);
    const __m256d v1 = _mm256_maskload_pd(values + k + 4, first1);
    sum0 = _mm256_blendv_pd(sum0, _mm256_fmadd_pd(v0, load_tail(h, col, k, k1, 0), sum0),
                            _mm256_castsi256_pd(first0));
    sum1 = _mm256_blendv_pd(sum1, _mm256_fmadd_pd(v1, load_tail(h, col, k, k1, 4), sum1),
                            _mm256_castsi256_pd(first1));
  }
  const __m256d s4 = _mm256_add_pd(sum0, sum1);  // sum[q] += sum[q + 4]
  const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}
#endif

// The row's dot product: row_dot_simd where there is one for T, else csr_dot.
template <typename T, typename Index>
acc_t<T> row_dot(const Index* col, const T* values, int64_t k0, int64_t k1, const T* h) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return row_dot_simd(col, values, k0, k1, h);
  }
#endif
  return csr_dot(col, values, k0, k1, h);
}

}  // namespace cpu
}  // namespace fastrnn
