#pragma once
// out = a @ b for the per-step GEMMs. float and double go straight to BLAS's sgemm_/dgemm_
// when the process has them (torch's MKL exports them), skipping the dispatcher's per-call
// cost, which matters at small sizes; anything else goes through at::mm_out.

#include <ATen/ATen.h>

extern "C" {
// Fortran BLAS, column-major. Weak: resolved only if a loaded library defines them.
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace fastrnn {
namespace cpu {
namespace detail {

// A row-major [rows, cols] operand seen by column-major BLAS: its transpose flag and
// leading dimension, or false when its strides fit neither layout.
inline bool blas_layout(const at::Tensor& t, char& trans, int& ld) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, cols)) {
    trans = 'N';  // row-major: column-major [cols, rows] = t^T
    ld = static_cast<int>(t.stride(0));
    return true;
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, rows)) {
    trans = 'T';  // column-major [rows, cols] = t; BLAS must transpose it
    ld = static_cast<int>(t.stride(1));
    return true;
  }
  return false;
}

template <typename scalar_t, typename Gemm>
bool blas_mm(Gemm gemm, at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (gemm == nullptr || m == 0 || n == 0 || k == 0 || m > kMax || n > kMax || k > kMax ||
      out.stride(1) != 1 || out.stride(0) != n) {
    return false;
  }
  char trans_a, trans_b;
  int ld_a, ld_b;
  if (!blas_layout(a, trans_a, ld_a) || !blas_layout(b, trans_b, ld_b)) return false;
  // Row-major out = a @ b is column-major out^T = b^T @ a^T.
  const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
  const int ld_out = static_cast<int>(n);
  const scalar_t one = 1, zero = 0;
  gemm(&trans_b, &trans_a, &mi, &ni, &ki, &one, b.data_ptr<scalar_t>(), &ld_b,
       a.data_ptr<scalar_t>(), &ld_a, &zero, out.data_ptr<scalar_t>(), &ld_out);
  return true;
}

}  // namespace detail

// out: [m, n] contiguous (a view into a preallocated buffer); a: [m, k]; b: [k, n].
inline void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  bool done = false;
  if (out.scalar_type() == at::kFloat) {
    done = detail::blas_mm<float>(sgemm_, out, a, b);
  } else if (out.scalar_type() == at::kDouble) {
    done = detail::blas_mm<double>(dgemm_, out, a, b);
  }
  if (!done) at::mm_out(out, a, b);
}

}  // namespace cpu
}  // namespace fastrnn
