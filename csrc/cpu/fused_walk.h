#pragma once
// The fused CPU walks: one parallel region for the whole walk over time instead of a
// BLAS call and a parallel loop per step. Each thread owns a slice of the hidden units
// (and their columns of the recurrent weight, packed into panels it keeps in its cache),
// and the threads meet at a SpinBarrier once per step.

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "panel_gemm.h"
#include "spin_barrier.h"

namespace fastrnn {
namespace cpu {

// Units [0, H) in slices of whole chunks of `chunk` units: slice i is
// [begin(i), begin(i + 1)).
struct UnitSlices {
  int64_t H, chunk, count;
  int64_t chunks() const { return (H + chunk - 1) / chunk; }
  int64_t begin(int64_t slice) const { return std::min(H, chunk * (slice * chunks() / count)); }
};

// Whether a fused walk should run a recurrence whose steps have at most `rows` rows, given
// the most rows for which it beats the BLAS walk. FASTRNN_CPU_FUSED=1 or 0 forces the
// choice (read at every call).
inline bool use_fused_walk(int64_t rows, int64_t max_rows) {
  if (const char* env = std::getenv("FASTRNN_CPU_FUSED")) {
    if (std::strcmp(env, "1") == 0) return true;
    if (std::strcmp(env, "0") == 0) return false;
  }
  return rows <= max_rows;
}

// Threads for a fused walk over H units in chunks of `chunk`: as many as torch uses, but
// no more than there are chunks or processors (a thread waiting at the barrier on a core
// that another of the walk's threads needs stalls every step: measured 2x slower than the
// BLAS walk with 4 threads on 2 cores), and one inside another parallel region. Only
// OpenMP runs every chunk of a parallel_for at once, as the barrier needs: with torch's
// other thread pools a chunk may wait in a queue behind a busy thread, so the walk keeps
// to one thread there.
inline UnitSlices fused_slices(int64_t H, int64_t chunk) {
  static const int64_t processors = std::max(1u, std::thread::hardware_concurrency());
  const bool concurrent = AT_PARALLEL_OPENMP && !at::in_parallel_region();
  const int64_t threads =
      concurrent ? std::min<int64_t>(at::get_num_threads(), processors) : 1;
  const int64_t chunks = UnitSlices{H, chunk, 1}.chunks();
  return {H, chunk, std::max<int64_t>(1, std::min(threads, chunks))};
}

// Runs body(j0, j1, sync) once per thread of one parallel region, where [j0, j1) are the
// units of the thread's slices and sync() returns once every thread has called it as
// often. body must not throw: a thread that left early would leave the others waiting.
template <typename Body>
void run_fused_walk(const UnitSlices& slices, const Body& body) {
  SpinBarrier barrier(slices.count);
  at::parallel_for(0, slices.count, 1, [&](int64_t first, int64_t last) {
    const auto sync = [&] { barrier.arrive_and_wait(last - first); };
    body(slices.begin(first), slices.begin(last), sync);
  });
}

}  // namespace cpu
}  // namespace fastrnn
