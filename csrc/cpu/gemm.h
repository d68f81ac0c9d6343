#pragma once
// The per-step products out = a @ w of the CPU recurrences, for a weight w fixed over the
// whole walk. float and double run row_products.h's kernels for few rows, else call BLAS's
// sgemm_/dgemm_ directly on raw pointers when the process has them (torch's MKL exports
// them): at small sizes a tensor view and a dispatch per step cost more than the product.
// Other dtypes go through at::mm_out.

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include <limits>
#include <utility>
#include <vector>

#include "row_products.h"
#include "subnormals.h"

extern "C" {
// Fortran BLAS, column-major. Weak: resolved only if a loaded library defines them.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc) __attribute__((weak));
// MKL's thread count for the calling thread's next calls (0: the global one); returns the
// previous. Weak as the gemms.
int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));
}

namespace fastrnn {
namespace cpu {

// While alive, the calling thread's BLAS products run without MKL's own threads, if the
// largest of them has fewer than kMaxMultiplyAdds multiply-adds: those threads cost more
// than they save there (AMD EPYC, 2 threads, a cell call's two products: RNN at B=8, H=64
// 12.6 against 9.9 us; from about 2^19 they pay). Where torch has no MKL, nothing changes.
// The thread's first-use setup of torch's thread counts runs before (it reads MKL's).
class SerialBlas {
 public:
  static constexpr int64_t kMaxMultiplyAdds = 1 << 18;
  explicit SerialBlas(int64_t multiply_adds)
      : active_(MKL_Set_Num_Threads_Local != nullptr && multiply_adds < kMaxMultiplyAdds),
        previous_(active_ ? (at::internal::lazy_init_num_threads(), MKL_Set_Num_Threads_Local(1))
                          : 0) {}
  ~SerialBlas() {
    if (active_) MKL_Set_Num_Threads_Local(previous_);
  }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  bool active_;
  int previous_;
};

// The BLAS gemm for scalar_t (float, double), or null.
template <typename scalar_t>
using BlasGemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const scalar_t*, const scalar_t*, const int*, const scalar_t*,
                          const int*, const scalar_t*, scalar_t*, const int*);
template <typename scalar_t>
BlasGemm<scalar_t> blas_gemm() {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return sgemm_;
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    return dgemm_;
  } else {
    return nullptr;
  }
}

template <typename scalar_t>
class StepGemm {
 public:
  // Products of at most kMaxRowProductRows rows in float and double, by a weight of at
  // least kMinRowProductElements, run row_products.h's kernels, each thread on its own
  // block of columns; else BLAS. Measured on an RNN's BLAS walk, 2 threads, AMD EPYC,
  // in-process interleaved, median of 15, ms, BLAS vs the kernels: T10 H1024 forward B4
  // 2.26 vs 1.29, B8 3.17 vs 2.24, B32 9.32 vs 7.51; fwd+bwd B8 11.7 vs 7.8, B32 27.0 vs
  // 23.4; T50 H256 forward B1 0.286 vs 0.239, B8 0.971 vs 0.840, B32 2.94 vs 2.87; fwd+bwd
  // B8 2.73 vs 2.31. At B64 they were 3% slower at H256, hence the limit of 32 rows. By a
  // transposed weight (h @ w_hh^T) the rows that packs_rows packs take the packed kernel,
  // up to row_products.h's kMaxPackedRows rows.
  static constexpr bool kRowProducts =
      kRowProductKernels && (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>);
  static constexpr int64_t kMaxRowProductRows = 32;
  static constexpr int64_t kAlign = 16;  // a column block's width: a multiple of this
  // Below kMinWeightToSplit elements of w a product takes a few microseconds, less than
  // waking the other threads (a parallel region costs more than the whole product of a
  // small cell call, and far more when another process holds a core).
  static constexpr int64_t kMinWeightToSplit = 1 << 16;

  // w: [k, n], row-major or a transposed row-major matrix; with transposed, w is [n, k]
  // and the product is a @ w^T (w_hh as stored, for h @ w_hh^T) with no transposed view
  // made, which costs about half a microsecond: a cell call without grad, 2 threads, AMD
  // EPYC, builds alternated over 4 process pairs, median us, with w.t() vs without:
  // RNNCell B1 H64 9.4-9.7 vs 8.4-8.5, LSTMCell 13.0-13.6 vs 12.3; a step of a 20-step
  // loop with backward, RNNCell 35.4-36.3 vs 34.4-35.1, LSTMCell 51.2-53.2 vs 50.0-50.6.
  explicit StepGemm(const at::Tensor& w, bool transposed = false)
      : w_(w),
        transposed_(transposed),
        k_(w.size(transposed ? 1 : 0)),
        n_(w.size(transposed ? 0 : 1)) {
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    if (!blas() || k_ == 0 || n_ == 0 || k_ > kMax || n_ > kMax) return;
    const int64_t k_stride = w.stride(transposed ? 1 : 0), n_stride = w.stride(transposed ? 0 : 1);
    if (n_stride == 1 && k_stride >= n_) {
      trans_w_ = 'N';  // column-major BLAS sees w^T [n, k]
      ld_w_ = static_cast<int>(k_stride);
    } else if (k_stride == 1 && n_stride >= k_) {
      trans_w_ = 'T';  // column-major BLAS sees w [k, n] and must transpose it
      ld_w_ = static_cast<int>(n_stride);
    }
  }

  // out: [m, n] and a: [m, k], rows lda and ldc elements apart (k and n: contiguous);
  // out = a @ w, or out += a @ w with accumulate. With few rows the product streams w
  // once per step: its columns are then split into one block per thread, each thread
  // always taking the same block, so that each core keeps its part of w in its own cache
  // from step to step.
  void operator()(int64_t m, const scalar_t* a, scalar_t* out, bool accumulate = false,
                  int64_t lda = 0, int64_t ldc = 0) const {
    if (m == 0) return;
    lda = lda > 0 ? lda : k_;
    ldc = ldc > 0 ? ldc : n_;
    if (trans_w_ == 0 || m > std::numeric_limits<int>::max()) {
      const auto options = w_.options();
      at::Tensor out_t = at::from_blob(out, {m, n_}, {ldc, 1}, options);
      at::Tensor a_t = at::from_blob(const_cast<scalar_t*>(a), {m, k_}, {lda, 1}, options);
      const at::Tensor w = transposed_ ? w_.t() : w_;  // [k, n]
      if (accumulate) {
        out_t.addmm_(a_t, w);
      } else {
        at::mm_out(out_t, a_t, w);
      }
      return;
    }
    constexpr int64_t kMaxRowsToSplit = 16;
    bool packed = false;  // a's rows packed: from row_products.h's kMinPackedRows rows
    if constexpr (kRowProducts) packed = large_weight() && trans_w_ == 'T' && packs_rows(m);
    const bool row_kernel = packed || takes_row_kernel(m);
    // a's rows packed (packed_rows_times_transposed) by each thread for itself, into its
    // own buffer kept from call to call (at most kMaxPackedRows * k_ elements); or null.
    const auto pack = [&]() -> const scalar_t* {
      if constexpr (kRowProducts) {
        if (packed) {
          thread_local std::vector<scalar_t> buffer;
          buffer.resize(row_panels<scalar_t>(m) * k_ * kPanelWidth<scalar_t>);
          pack_rows(m, a, lda, k_, buffer.data());
          return buffer.data();
        }
      }
      return nullptr;
    };
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    if ((m > kMaxRowsToSplit && !row_kernel) || threads == 1 || n_ < 2 * kAlign * threads ||
        k_ * n_ < kMinWeightToSplit) {
      columns(m, a, out, 0, n_, accumulate, lda, ldc, row_kernel, pack());
      return;
    }
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      const FlushSubnormals flush(AT_PARALLEL_OPENMP);
      const scalar_t* panels = pack();
      for (int64_t t = begin; t < end; ++t) {
        const auto [first, width] = block(t, threads);
        columns(m, a, out, first, width, accumulate, lda, ldc, row_kernel, panels);
      }
    });
  }

  // Whether share() can run this weight's product (BLAS or the row kernels reach it).
  bool shares() const { return trans_w_ != 0; }

  // Part `part` of `parts` of out = a @ w (a: [m, k], out: [m, n], both contiguous): the
  // block of out's columns that operator() gives thread `part` of `parts`, formed by the
  // calling thread alone (a's rows not packed), for callers that run several products in
  // one parallel region (step_products.h). Needs shares().
  void share(int64_t m, const scalar_t* a, scalar_t* out, int64_t part, int64_t parts) const {
    const auto [first, width] = block(part, parts);
    columns(m, a, out, first, width, false, k_, n_, takes_row_kernel(m), nullptr);
  }

 private:
  // out[:, first : first + width] (+)= a @ w[:, first : first + width].
  void columns(int64_t m, const scalar_t* a, scalar_t* out, int64_t first, int64_t width,
               bool accumulate, int64_t lda, int64_t ldc, bool row_kernel,
               const scalar_t* panels) const {
    if (width == 0) return;
    if constexpr (kRowProducts) {
      if (row_kernel) {
        const scalar_t* w = w_.data_ptr<scalar_t>();
        const int64_t ld = ld_w_, last = first + width;
        if (trans_w_ == 'N') {  // w [k, n], rows ld apart
          rows_times(m, a, lda, w, ld, k_, out, ldc, first, last, accumulate);
        } else if (panels != nullptr) {  // w = v^T as below; a packed
          packed_rows_times_transposed(m, panels, w, ld, k_, out, ldc, first, last, accumulate);
        } else {  // w = v^T, v [n, k] rows ld apart
          rows_times_transposed(m, a, lda, w, ld, k_, out, ldc, first, last, accumulate);
        }
        return;
      }
    }
    const SerialBlas serial(m * width * k_);
    // Row-major out = a @ w is column-major out^T [n, m] = w^T @ a^T.
    const int mi = static_cast<int>(width), ni = static_cast<int>(m), ki = static_cast<int>(k_);
    const int ld_a = static_cast<int>(lda), ld_out = static_cast<int>(ldc);
    // MKL runs beta = 0 as a scaling pass over out (mkl_blas_def_sgemm_mscale, 5% of the
    // samples of an RNN cell's call at B128 H64): out is zeroed here and added to. That
    // call, no_grad, builds alternated both ways round: 28.8-28.9 -> 26.5-27.5 us.
    if (!accumulate) {
      for (int64_t r = 0; r < m; ++r) std::fill_n(out + r * ldc + first, width, scalar_t(0));
    }
    const scalar_t one = 1;
    const char no_trans = 'N';
    const scalar_t* w = w_.data_ptr<scalar_t>() + (trans_w_ == 'N' ? first : first * ld_w_);
    blas()(&trans_w_, &no_trans, &mi, &ni, &ki, &one, w, &ld_w_, a, &ld_a, &one, out + first,
           &ld_out);
  }

  static BlasGemm<scalar_t> blas() { return blas_gemm<scalar_t>(); }

  bool large_weight() const { return kRowProducts && k_ * n_ >= kMinRowProductElements; }
  // Whether m rows take the row kernels unpacked.
  bool takes_row_kernel(int64_t m) const {
    return large_weight() && m <= kMaxRowProductRows;
  }
  // Block `part` of `parts` of w's columns, (first, width): widths a multiple of kAlign but
  // the last, which may be short or empty.
  std::pair<int64_t, int64_t> block(int64_t part, int64_t parts) const {
    const int64_t width = ((n_ + parts - 1) / parts + kAlign - 1) / kAlign * kAlign;
    const int64_t first = std::min(n_, part * width);
    return {first, std::min(width, n_ - first)};
  }

  // Whether m rows by this weight take the packed kernel (row_products.h's rule).
  bool packs_rows(int64_t m) const {
    const int64_t panels = row_panels<scalar_t>(m);
    return m >= kMinPackedRows<scalar_t> && m <= kMaxPackedRows && n_ >= kMinPackedColumns &&
           5 * m >= 4 * panels * kPanelWidth<scalar_t> &&
           (panels >= 2 || k_ * n_ >= kMinOnePanelElements);
  }

  at::Tensor w_;
  bool transposed_;  // w_ is [n, k]
  int64_t k_, n_;
  char trans_w_ = 0;  // 0: no BLAS path
  int ld_w_ = 0;
};

}  // namespace cpu
}  // namespace fastrnn
