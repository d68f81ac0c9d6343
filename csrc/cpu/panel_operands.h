#pragma once
// The operand type M of a fused walk's recurrent products (fused_walk.h), for a walk whose
// state is in T: M = T (panel_gemm.h's panels, the rows read in place), or M = bfloat16 for
// a float walk (bfloat16 autocast): the weight's panels in bfloat16 pairs and each step's
// rows rounded to bfloat16 once, multiplied with float accumulation (AVX512-BF16's
// vdpbf16ps, twice the multiply-adds of a float FMA per instruction). Everything else of
// the walk (the pre-activations, the gates, the state) stays in T. The bfloat16 operands
// exist where the build targets AVX512-BF16 (kBfloat16Panels); elsewhere the walks read a
// bfloat16 weight converted to float (cpu/backend.cpp).

#include <c10/util/BFloat16.h>

#include <type_traits>
#include <vector>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "panel_gemm.h"

namespace fastrnn {
namespace cpu {

using c10::BFloat16;

// A bfloat16 panel holds kPanelWidth<float> columns of a [K, n] matrix in pairs of k:
// panel[(k / 2) * 2W + 2c + k % 2], K rounded up to even (bfloat16_depth) with zeros; a
// row operand is bfloat16_depth(K) values, zero past K.
constexpr int64_t bfloat16_depth(int64_t K) { return K + K % 2; }

#if defined(__AVX512BF16__)
constexpr bool kBfloat16Panels = true;

// out[r * W + c] = sum_k a[r][k] * panel(k, c) for r < MR: a: MR rows of bfloat16_depth(K);
// out: [MR, W] floats. Pairs of k in order, each added to the float sums as vdpbf16ps does
// (both products exact, subnormals flushed).
template <int MR>
void bfloat16_panel_product_rows(const BFloat16* const* a, const BFloat16* panel, int64_t K,
                                 float* out) {
  constexpr int W = kPanelWidth<float>;
  static_assert(W == 16, "one 512-bit register of float sums per row");
  const int64_t pairs = bfloat16_depth(K) / 2;
  __m512 sums[MR];
  for (int r = 0; r < MR; ++r) sums[r] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < pairs; ++k) {
    const __m512bh p = (__m512bh)_mm512_loadu_si512(panel + k * 2 * W);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;  // a[r][2k], a[r][2k + 1]
      std::memcpy(&pair, a[r] + 2 * k, sizeof pair);
      sums[r] = _mm512_dpbf16_ps(sums[r], (__m512bh)_mm512_set1_epi32(pair), p);
    }
  }
  for (int r = 0; r < MR; ++r) _mm512_storeu_ps(out + r * W, sums[r]);
}
#else
constexpr bool kBfloat16Panels = false;
#endif

// What the walks call, by operand type: depth(K), the elements of one panel row; pack and
// product as panel_gemm.h's pack_panel and panel_product.
template <typename T, typename M>
struct PanelOperands {
  static_assert(std::is_same_v<T, M>, "bfloat16 operands are for float walks");
  static constexpr int64_t depth(int64_t K) { return K; }
  template <typename Column>
  static void pack(M* panel, int64_t K, int64_t k_stride, const Column& column) {
    pack_panel(panel, K, k_stride, column);
  }
  static void product(int rows, const M* const* a, const M* panel, int64_t K, T* out) {
    panel_product(rows, a, panel, K, out);
  }
};

#if defined(__AVX512BF16__)
template <>
struct PanelOperands<float, BFloat16> {
  static constexpr int64_t depth(int64_t K) { return bfloat16_depth(K); }
  template <typename Column>
  static void pack(BFloat16* panel, int64_t K, int64_t k_stride, const Column& column) {
    constexpr int W = kPanelWidth<float>;
    for (int64_t c = 0; c < W; ++c) {
      const BFloat16* src = column(c);
      for (int64_t k = 0; k < depth(K); ++k) {
        panel[(k / 2) * 2 * W + 2 * c + k % 2] = src && k < K ? src[k * k_stride] : BFloat16(0.f);
      }
    }
  }
  static void product(int rows, const BFloat16* const* a, const BFloat16* panel, int64_t K,
                      float* out) {
    switch (rows) {
      case 1: return bfloat16_panel_product_rows<1>(a, panel, K, out);
      case 2: return bfloat16_panel_product_rows<2>(a, panel, K, out);
      case 3: return bfloat16_panel_product_rows<3>(a, panel, K, out);
      case 4: return bfloat16_panel_product_rows<4>(a, panel, K, out);
      case 5: return bfloat16_panel_product_rows<5>(a, panel, K, out);
      default: return bfloat16_panel_product_rows<kMaxPanelRows>(a, panel, K, out);
    }
  }
};
#endif

// dst[k] = src[k] rounded to the nearest bfloat16 (ties to even), k < n.
inline void round_to_bfloat16(const float* src, BFloat16* dst, int64_t n) {
  int64_t k = 0;
#if defined(__AVX512BF16__)
  for (; k + 16 <= n; k += 16) {
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + k));
    std::memcpy(dst + k, &rounded, sizeof rounded);
  }
#endif
  for (; k < n; ++k) dst[k] = BFloat16(src[k]);
}

// The rows one thread's products read in a step, each K long, in M: load() takes them once
// per step from row(i) (a T row), row(i) gives them to the products. M = T: the rows
// themselves; bfloat16: rounded (to nearest even) into the thread's buffer, zero-padded.
template <typename T, typename M>
class StepRows {
 public:
  StepRows(int64_t rows, int64_t K)
      : K_(K), pointers_(rows), buffer_(std::is_same_v<T, M> ? 0 : rows * bfloat16_depth(K)) {}

  template <typename Row>
  void load(int64_t begin, int64_t end, const Row& row) {
    for (int64_t i = begin; i < end; ++i) {
      const T* src = row(i);
      if constexpr (std::is_same_v<T, M>) {
        pointers_[i] = src;
      } else {
        M* dst = buffer_.data() + i * bfloat16_depth(K_);
        round_to_bfloat16(src, dst, K_);
        if (K_ % 2) dst[K_] = M(0.f);
        pointers_[i] = dst;
      }
    }
  }

  const M* row(int64_t i) const { return pointers_[i]; }

 private:
  int64_t K_;
  std::vector<const M*> pointers_;
  std::vector<M> buffer_;
};

}  // namespace cpu
}  // namespace fastrnn
