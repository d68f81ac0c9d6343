#pragma once
// Subnormal floats flushed to zero inside the CPU recurrences. A gradient that only the
// final state receives decays through time into subnormals (|x| < 1.2e-38 in float32,
// 2.2e-308 in double), and x86 cores take a microcode assist for every operation on one:
// on an Intel Xeon backward then ran 15-20x slower than with a loss on every output.
// While a FlushSubnormals guard lives, its thread treats subnormal inputs as zero (DAZ) and
// rounds subnormal results to zero (FTZ); results differ from IEEE arithmetic only where a
// value is below the smallest normal. The guard restores the state it found, so every
// thread leaves as it entered.
//
// Where the guards stand: at the top of the body of every parallel region the CPU walks
// open (gemm.h, recurrence.h, fused_split.h, step_products.h), which holds all of a walk's
// gate arithmetic, so each thread flushes exactly while it runs fastrnn's work, also when a
// body runs inline on the calling thread. Never around code that can start a parallel
// region: a thread that OpenMP or BLAS creates inherits its creator's floating-point state,
// and would keep it. (BLAS called inside an OpenMP region runs on the calling thread alone,
// so gemm.h and step_products.h guard their split products only where ATen's regions are
// OpenMP's.) Arithmetic outside those bodies keeps the caller's state: the products that
// are not split across threads (BLAS may use its own threads for them), the weight
// gradients BLAS forms, the BLAS walk's products in bfloat16 and half (at::mm), and the few
// element-wise sums between a walk's steps; the gate loops that feed them flush. x86-64
// only (MXCSR); elsewhere the guard does nothing.

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTRNN_FLUSH_SUBNORMALS 1
#else
#define FASTRNN_FLUSH_SUBNORMALS 0
#endif

namespace fastrnn {
namespace cpu {

// enabled false: a guard that does nothing (gemm.h, where ATen's regions are not OpenMP's).
class FlushSubnormals {
 public:
#if FASTRNN_FLUSH_SUBNORMALS
  explicit FlushSubnormals(bool enabled = true)
      : enabled_(enabled), saved_(_mm_getcsr() & kFlushBits) {
    if (enabled_) _mm_setcsr(_mm_getcsr() | kFlushBits);
  }
  // Only the two modes go back: exception flags raised meanwhile stay raised.
  ~FlushSubnormals() {
    if (enabled_) _mm_setcsr((_mm_getcsr() & ~kFlushBits) | saved_);
  }
#else
  explicit FlushSubnormals(bool = true) {}
#endif
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
#if FASTRNN_FLUSH_SUBNORMALS
  static constexpr unsigned kFlushBits = 0x8000u | 0x0040u;  // MXCSR's FTZ and DAZ
  bool enabled_;
  unsigned saved_;  // the caller's FTZ and DAZ bits
#endif
};

}  // namespace cpu
}  // namespace fastrnn
