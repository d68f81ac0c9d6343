#pragma once
// How the fused CPU walks (fused_walk.h) share out their work: one parallel region for the
// whole walk over time instead of a BLAS call and a parallel loop per step, and whether to
// take it at all (fused_split). Each thread owns a slice of the hidden units
// (and their columns of the recurrent weight, packed into panels it keeps in its cache),
// and the threads meet at a SpinBarrier once per step; or each owns a slice of the rows
// and walks them alone, reading every panel.

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "panel_gemm.h"
#include "spin_barrier.h"
#include "subnormals.h"

namespace fastrnn {
namespace cpu {

// [0, n) (hidden units, or rows) in `count` slices of whole chunks of `chunk`: slice i is
// [begin(i), begin(i + 1)).
struct UnitSlices {
  int64_t n, chunk, count;
  int64_t chunks() const { return (n + chunk - 1) / chunk; }
  int64_t begin(int64_t slice) const { return std::min(n, chunk * (slice * chunks() / count)); }
};

// How a fused walk runs a recurrence, or not at all (kNone: the BLAS walk).
//   kUnits: each thread owns a slice of the hidden units and the threads meet at a barrier
//           every step, since each step needs every unit of the last;
//   kRows:  each thread owns whole rows (sequences) and walks them alone, with no barrier;
//           every thread then reads the whole recurrent weight each step.
enum class FusedSplit { kNone, kUnits, kRows };

// When a walk is fused, and how: at most max_rows rows per step (beyond them BLAS's
// blocking of the rows pays off), and below few_rows rows only with a recurrent weight of
// at most few_rows_max_weight_bytes (at one or two rows the panel products are bound by
// their loads, where the BLAS walk's dot products reuse each row's vector); with
// weight_bytes_per_step, only over at least one step per that many bytes of the weight
// (the walk packs it once per call); rows split when each thread gets at least
// rows_min_per_thread of them and the recurrent weight (which every thread then reads each
// step) is at most rows_max_weight_bytes. Measured values in backend.cpp.
struct FusedPolicy {
  int64_t max_rows, rows_min_per_thread, rows_max_weight_bytes;
  int64_t few_rows = 0, few_rows_max_weight_bytes = 0, weight_bytes_per_step = 0;
};

// Threads for a fused walk: as many as torch uses, but no more than there are processors
// (a thread waiting at the barrier on a core that another of the walk's threads needs
// stalls every step: measured 2x slower than the BLAS walk with 4 threads on 2 cores),
// and one inside another parallel region. Only OpenMP runs every chunk of a parallel_for
// at once, as the barrier needs: with torch's other thread pools a chunk may wait in a
// queue behind a busy thread, so the walk keeps to one thread there.
inline int64_t fused_threads() {
  static const int64_t processors = std::max(1u, std::thread::hardware_concurrency());
  const bool concurrent = AT_PARALLEL_OPENMP && !at::in_parallel_region();
  return concurrent ? std::min<int64_t>(at::get_num_threads(), processors) : 1;
}

// FASTRNN_CPU_FUSED (read at every call): 0, 1, units or rows, or empty.
inline std::string_view fused_walk_choice() {
  const char* env = std::getenv("FASTRNN_CPU_FUSED");
  return env ? env : "";
}

// Whether FASTRNN_CPU_FUSED forces a fused walk (1, units or rows).
inline bool fused_walk_forced() {
  const std::string_view force = fused_walk_choice();
  return force == "1" || force == "units" || force == "rows";
}

// How to run a recurrence of `steps` steps, at most `rows` rows per step and a recurrent
// weight of `weight_bytes` on fused_threads() threads. FASTRNN_CPU_FUSED=0, 1, units or
// rows forces the choice (1: fused, split as the policy says).
inline FusedSplit fused_split(const FusedPolicy& policy, int64_t steps, int64_t rows,
                              int64_t weight_bytes) {
  const std::string_view force = fused_walk_choice();
  if (force == "0") return FusedSplit::kNone;
  if (force == "units") return FusedSplit::kUnits;
  if (force == "rows") return FusedSplit::kRows;
  const bool few = rows < policy.few_rows && weight_bytes > policy.few_rows_max_weight_bytes;
  const bool short_walk =
      policy.weight_bytes_per_step > 0 && steps * policy.weight_bytes_per_step < weight_bytes;
  if (force != "1" && (rows > policy.max_rows || few || short_walk)) return FusedSplit::kNone;
  const int64_t threads = fused_threads();
  const bool by_rows = threads > 1 && rows >= policy.rows_min_per_thread * threads &&
                       weight_bytes <= policy.rows_max_weight_bytes;
  return by_rows ? FusedSplit::kRows : FusedSplit::kUnits;
}

// [0, n) in one slice per thread of whole chunks of `chunk`, no more slices than chunks.
inline UnitSlices fused_slices(int64_t n, int64_t chunk) {
  const int64_t chunks = UnitSlices{n, chunk, 1}.chunks();
  return {n, chunk, std::max<int64_t>(1, std::min(fused_threads(), chunks))};
}

// Runs body(begin, end, sync) once per thread of one parallel region, where [begin, end)
// are the units (or rows) of the thread's slices and sync() returns once every thread has
// called it as often. body must not throw: a thread that left early would leave the others
// waiting.
template <typename Body>
void run_fused_walk(const UnitSlices& slices, const Body& body) {
  SpinBarrier barrier(slices.count);
  at::parallel_for(0, slices.count, 1, [&](int64_t first, int64_t last) {
    const FlushSubnormals flush;
    const auto sync = [&] { barrier.arrive_and_wait(last - first); };
    body(slices.begin(first), slices.begin(last), sync);
  });
}

// Runs a fused walk over B rows and H units split as `split` (kUnits or kRows), where
// pack(p) packs the weight panel of units [p * chunk, (p + 1) * chunk). By rows, every
// panel is packed first, across threads; by units, each thread packs its own. Then
// body(j0, j1, r_begin, r_end, sync) runs once per thread: it walks units [j0, j1) of rows
// [r_begin, r_end) of every step, calling sync() after each step (a barrier by units, a
// no-op by rows, where no thread reads what another writes).
template <typename Pack, typename Body>
void run_split_walk(FusedSplit split, int64_t B, int64_t H, int64_t chunk, const Pack& pack,
                    const Body& body) {
  if (split == FusedSplit::kRows) {
    at::parallel_for(0, UnitSlices{H, chunk, 1}.chunks(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) pack(p);
    });
    run_fused_walk(fused_slices(B, 1), [&](int64_t r_begin, int64_t r_end, const auto&) {
      body(int64_t{0}, H, r_begin, r_end, [] {});
    });
    return;
  }
  run_fused_walk(fused_slices(H, chunk), [&](int64_t j0, int64_t j1, const auto& sync) {
    for (int64_t p = j0 / chunk; p * chunk < j1; ++p) pack(p);
    body(j0, j1, int64_t{0}, B, sync);
  });
}

}  // namespace cpu
}  // namespace fastrnn
