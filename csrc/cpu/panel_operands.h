#pragma once
// The operand type M of a fused walk's recurrent products (fused_walk.h), for a walk whose
// state is in T: M = T = float or double (panel_gemm.h's panels, the rows read in place),
// or M = bfloat16 for a float walk (bfloat16 autocast training) or a bfloat16 one: the
// weight's panels in bfloat16 pairs, multiplied with float accumulation (AVX512-BF16's
// vdpbf16ps, twice the multiply-adds of a float FMA per instruction), a float state's rows
// rounded to bfloat16 once per step, a bfloat16 state's read in place where their length
// is even. Everything else of the walk (the pre-activations, the gates, the state) stays
// in T. The bfloat16 operands exist where the build targets AVX512-BF16
// (kBfloat16Panels); elsewhere the walks read a bfloat16 weight converted to float, and a
// bfloat16 state takes the BLAS walk (cpu/backend.cpp).

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>
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

// One operand set of a walk's products: rows a (each K long, in M) against panels of M over
// K (PanelOperands' layout for M), the first at `panels`.
template <typename M>
struct ProductSpan {
  const M* const* a;
  const M* panels;
  int64_t K;
};

#if defined(__AVX512BF16__)
constexpr bool kBfloat16Panels = true;

// out[(p * MR + r) * W + c] = sum over the spans of sum_k a[r][k] * panel_p(k, c) for r < MR,
// p < NP: each span's a: MR rows of bfloat16_depth(K); its panel_p at span.panels + p *
// bfloat16_depth(K) * W; out: [NP, MR, W] floats. Pairs of k, each added to the float sums as
// vdpbf16ps does (both products exact, subnormals flushed). Two panels share each row's
// broadcast. With C = 2 sums per output (MR <= 2), sum c takes a span's pairs c, c + 2, ...
// in order (the last, of an odd count, into sum 0) and out is their sum; so that 2 * NP * MR
// * C are in flight (one thread, AMD EPYC, K = 256, GFLOP/s, one sum vs two: MR = 1 91 vs
// 104, 2 156 vs 193-198; MR = 3 runs at 232 with one).
template <int MR, int NP>
void bfloat16_panel_product_rows(const ProductSpan<BFloat16>* spans, int count, float* out) {
  constexpr int W = kPanelWidth<float>, C = MR <= 2 ? 2 : 1;
  static_assert(W == 16, "one 512-bit register of float sums per row");
  __m512 sums[C][NP][MR];
  for (int c = 0; c < C; ++c) {
    for (int p = 0; p < NP; ++p) {
      for (int r = 0; r < MR; ++r) sums[c][p][r] = _mm512_setzero_ps();
    }
  }
  for (int span = 0; span < count; ++span) {
    const BFloat16* const* a = spans[span].a;
    const BFloat16* panel = spans[span].panels;
    const int64_t pairs = bfloat16_depth(spans[span].K) / 2, panel_stride = 2 * pairs * W;
    // Adds pair k to sum c.
    const auto add_pair = [&](int c, int64_t k) {
      __m512bh columns[NP];
      for (int p = 0; p < NP; ++p) {
        columns[p] = (__m512bh)_mm512_loadu_si512(panel + p * panel_stride + k * 2 * W);
      }
      for (int r = 0; r < MR; ++r) {
        int32_t pair;  // a[r][2k], a[r][2k + 1]
        std::memcpy(&pair, a[r] + 2 * k, sizeof pair);
        const __m512bh row = (__m512bh)_mm512_set1_epi32(pair);
        for (int p = 0; p < NP; ++p) {
          sums[c][p][r] = _mm512_dpbf16_ps(sums[c][p][r], row, columns[p]);
        }
      }
    };
    const int64_t whole = pairs - pairs % C;
#pragma GCC unroll 4
    for (int64_t k = 0; k < whole; k += C) {
      for (int c = 0; c < C; ++c) add_pair(c, k + c);
    }
    if (whole < pairs) add_pair(0, whole);
  }
  for (int p = 0; p < NP; ++p) {
    for (int r = 0; r < MR; ++r) {
      for (int c = 1; c < C; ++c) sums[0][p][r] = _mm512_add_ps(sums[0][p][r], sums[c][p][r]);
      _mm512_storeu_ps(out + (p * MR + r) * W, sums[0][p][r]);
    }
  }
}

// bfloat16_panel_product_rows for 1 <= rows <= kMaxPanelRows.
template <int NP>
void bfloat16_panel_product(int rows, const ProductSpan<BFloat16>* spans, int count,
                            float* out) {
  with_panel_rows(rows, [&](auto mr) {
    bfloat16_panel_product_rows<mr(), NP>(spans, count, out);
  });
}
#else
constexpr bool kBfloat16Panels = false;
#endif

// What the walks call, by state type T and operand type M: kWidth, the columns of a panel;
// Sum, the type of the products' sums; depth(K), the elements of one panel row; pack as
// panel_gemm.h's pack_panel; products(rows, spans, span_count, count, out): `count`
// consecutive panels of each of span_count <= 2 spans (depth(K) * kWidth apart from
// span.panels, over the span's K, against its rows a), panel p's sums over the spans at
// out + p * rows * kWidth.
template <typename T, typename M>
struct PanelOperands {
  static_assert(std::is_same_v<T, M>, "bfloat16 operands are for float and bfloat16 walks");
  static constexpr int64_t kWidth = kPanelWidth<T>;
  using Sum = T;
  static constexpr int64_t depth(int64_t K) { return K; }
  template <typename Column>
  static void pack(M* panel, int64_t K, int64_t k_stride, const Column& column) {
    pack_panel(panel, K, k_stride, column);
  }
  static void products(int rows, const ProductSpan<M>* spans, int span_count, int64_t count,
                       Sum* out) {
    PanelSpan<M> at_panel[2];
    for (int64_t p = 0; p < count; ++p) {
      for (int s = 0; s < span_count; ++s) {
        at_panel[s] = {spans[s].a, spans[s].panels + p * spans[s].K * kWidth, spans[s].K};
      }
      panel_product(rows, at_panel, span_count, out + p * rows * kWidth);
    }
  }
};

#if defined(__AVX512BF16__)
template <typename T>
struct PanelOperands<T, BFloat16> {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, BFloat16>);
  static constexpr int64_t kWidth = kPanelWidth<float>;
  using Sum = float;
  static constexpr int64_t depth(int64_t K) { return bfloat16_depth(K); }
  template <typename Column>
  static void pack(BFloat16* panel, int64_t K, int64_t k_stride, const Column& column) {
    constexpr int64_t W = kWidth;
    const BFloat16* src[W];
    for (int64_t c = 0; c < W; ++c) src[c] = column(c);
    for (int64_t k = 0; k < depth(K); ++k) {  // pair by pair of the panel, as pack_panel
      for (int64_t c = 0; c < W; ++c) {
        panel[(k / 2) * 2 * W + 2 * c + k % 2] =
            src[c] && k < K ? src[c][k * k_stride] : BFloat16(0.f);
      }
    }
  }
  static void products(int rows, const ProductSpan<BFloat16>* spans, int span_count,
                       int64_t count, float* out) {
    ProductSpan<BFloat16> at_panel[2];
    const auto shift = [&](int64_t p) {  // the spans at panel p
      for (int s = 0; s < span_count; ++s) {
        at_panel[s] = {spans[s].a, spans[s].panels + p * depth(spans[s].K) * kWidth,
                       spans[s].K};
      }
    };
    int64_t p = 0;
    for (; p + 2 <= count; p += 2) {  // two at a time: each row's broadcast serves both
      shift(p);
      bfloat16_panel_product<2>(rows, at_panel, span_count, out + p * rows * kWidth);
    }
    if (p < count) {
      shift(p);
      bfloat16_panel_product<1>(rows, at_panel, span_count, out + p * rows * kWidth);
    }
  }
};
#endif

// dst[k] = src[k] rounded to the nearest bfloat16 (ties to even), k < n.
inline void round_to_bfloat16(const float* src, BFloat16* dst, int64_t n) {
#if defined(__AVX512BF16__)
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + k));
    std::memcpy(dst + k, &rounded, sizeof rounded);
  }
  if (k < n) {  // the last n - k < 16, masked
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - k)) - 1);
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, src + k));
    _mm256_mask_storeu_epi16(dst + k, tail, (__m256i)rounded);
  }
#else
  for (int64_t k = 0; k < n; ++k) dst[k] = BFloat16(src[k]);
#endif
}

// dst[k] = src[k] in D, k < n: a copy, or rounded to the nearest bfloat16 (ties to even).
template <typename S, typename D>
void convert_row(const S* src, D* dst, int64_t n) {
  if constexpr (std::is_same_v<S, D>) {
    std::memcpy(dst, src, n * sizeof(D));
  } else {
    static_assert(std::is_same_v<S, float> && std::is_same_v<D, BFloat16>,
                  "the walks convert float sums or rows to bfloat16 only");
    round_to_bfloat16(src, dst, n);
  }
}

// The rows one thread's products read in a step, each K long, as operands in M: load()
// takes them once per step from row(i) (a T row), row(i) gives them to the products. The
// rows themselves where they are operands as they are (T = M, depth K); else converted
// (convert_row) into the thread's buffer, zero-padded to the depth.
template <typename T, typename M>
class StepRows {
 public:
  StepRows(int64_t rows, int64_t K)
      : K_(K),
        depth_(PanelOperands<T, M>::depth(K)),
        pointers_(rows),
        buffer_(in_place() ? 0 : rows * depth_) {}

  template <typename Row>
  void load(int64_t begin, int64_t end, const Row& row) {
    for (int64_t i = begin; i < end; ++i) {
      const T* src = row(i);
      if (in_place()) {
        pointers_[i] = reinterpret_cast<const M*>(src);  // T = M
        continue;
      }
      M* dst = buffer_.data() + i * depth_;
      convert_row(src, dst, K_);
      std::fill(dst + K_, dst + depth_, M(0.f));
      pointers_[i] = dst;
    }
  }

  const M* row(int64_t i) const { return pointers_[i]; }

 private:
  bool in_place() const { return std::is_same_v<T, M> && depth_ == K_; }

  int64_t K_, depth_;
  std::vector<const M*> pointers_;
  std::vector<M> buffer_;
};

}  // namespace cpu
}  // namespace fastrnn
