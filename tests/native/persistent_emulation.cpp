// Host emulation of the persistent kernels (csrc/cuda/persistent/): runs the very Block
// phases of block.h (and the barrier protocol of barrier.h) on the CPU, for the tests.
// Built with a plain C++20 compiler (-I csrc) into a shared library and called through
// ctypes (tests/helpers/persistent_host.py).
//
// Two drivers:
//   sequential: phase by phase; within a block every phase runs its threads 0..n-1 one
//               after the other (a __syncthreads between phases), the product runs each
//               warp's 32 lanes and then the same butterfly as __shfl_xor_sync.
//   threaded:   one std::thread per block, each walking its own program with the grid
//               barrier of barrier.h over std::atomic_ref; optional per-block delays make
//               blocks drift apart, so a missing or broken barrier shows as a read of a
//               poisoned (NaN) row. skip_barrier=1 removes the barrier (negative control).
// Storage and accumulation type are the same here (float or double: acc_t<T> = T).

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "cell_kinds.h"
#include "cuda/dispatch.h"
#include "cuda/persistent/barrier.h"
#include "cuda/persistent/block.h"

namespace fastrnn {
namespace persistent {
namespace {

struct HostAtomics {
  static unsigned int fetch_add_release(unsigned int* p, unsigned int v) {
    return std::atomic_ref<unsigned int>(*p).fetch_add(v, std::memory_order_acq_rel);
  }
  static unsigned int load_acquire(unsigned int* p) {
    return std::atomic_ref<unsigned int>(*p).load(std::memory_order_acquire);
  }
  static void pause() { std::this_thread::yield(); }
};

// The FFMA product of one block: warp w, columns w, w + nwarps, ... kColsPerPass at a time;
// lanes, then the butterfly acc[l] = acc[l] + acc[l ^ off] for off = 16, 8, 4, 2, 1
// (what the device's __shfl_xor_sync loop computes, in the same order).
template <class Blk, class A>
void product(const Blk& b, const DotJob& j, int nthreads) {
  const int nwarps = nthreads / kWarp;
  static thread_local A part[kWarp][kColsPerPass][kMaxRowsPerPass];
  static thread_local A tmp[kWarp][kColsPerPass][kMaxRowsPerPass];
  for (int warp = 0; warp < nwarps; ++warp) {
    for (int c = warp; c < j.ncol; c += nwarps * kColsPerPass) {
      const int nq = Blk::dot_columns(j, c, nwarps);
      for (int r0 = 0; r0 < j.R; r0 += kMaxRowsPerPass) {
        for (int lane = 0; lane < kWarp; ++lane) {
          std::fill(&part[lane][0][0], &part[lane][0][0] + kColsPerPass * kMaxRowsPerPass, A(0));
          b.dot_partial(j, c, nwarps, r0, lane, part[lane]);
        }
        for (int off = kWarp / 2; off > 0; off /= 2) {
          std::memcpy(tmp, part, sizeof part);
          for (int lane = 0; lane < kWarp; ++lane) {
            for (int q = 0; q < kColsPerPass; ++q) {
              for (int r = 0; r < kMaxRowsPerPass; ++r) {
                part[lane][q][r] = tmp[lane][q][r] + tmp[lane ^ off][q][r];
              }
            }
          }
        }
        for (int q = 0; q < nq; ++q) b.dot_store(j, c + q * nwarps, r0, part[0][q]);
      }
    }
  }
}

// The host twin of mma.h's tile_product: lane `lane`'s 4 results of the 16x8 tile, the
// same dot products in plain loops (in another order than the device's: its sums differ in
// the last bits), at the positions frag_coords gives.
template <class T, class A>
void tile_product_twin(const T* x, const T* w, int ld, int k0, int k1, int lane, A* out) {
  for (int i = 0; i < 4; ++i) {
    int r, c;
    frag_coords(lane, i, &r, &c);
    for (int k = k0; k < k1; ++k) {
      out[i] += static_cast<A>(x[r * ld + k]) * static_cast<A>(w[c * ld + k]);
    }
  }
}

// The tensor-core product of one block, with the host twin for each warp's tile.
template <class Blk, class A>
void product_mma(const Blk& b, const DotJob& j, int nthreads) {
  const int nwarps = nthreads / kWarp;
  const MmaJob m = b.mma_job(j, nwarps);
  for (int warp = 0; warp < nwarps; ++warp) {
    for (int q = warp; q < m.tiles * m.ksplit; q += nwarps) {
      for (int lane = 0; lane < kWarp; ++lane) {
        const auto* x = b.x_s;
        const auto* w = b.w_s;
        int k0, k1;
        b.mma_operands(m, q, &x, &w, &k0, &k1);
        A out[4] = {A(0), A(0), A(0), A(0)};
        tile_product_twin(x, w, b.ld, k0, k1, lane, out);
        b.mma_store(j, m, q, lane, out);
      }
    }
  }
  for (int tid = 0; tid < nthreads; ++tid) b.mma_reduce(j, m, tid, nthreads);
}

template <class Blk, class A>
void product_any(const Blk& b, const DotJob& j, int nthreads, bool mma) {
  if (mma) {
    product_mma<Blk, A>(b, j, nthreads);
  } else {
    product<Blk, A>(b, j, nthreads);
  }
}

template <class F>
void threads(int n, const F& f) {
  for (int tid = 0; tid < n; ++tid) f(tid);
}

// One block's whole program, as the kernels run it; `sync` is the grid barrier.
template <class Cell, class T, class Sync, class Delay>
void block_program(const Block<Cell, T>& b, int nthreads, bool mma, const Sync& sync,
                   const Delay& delay) {
  const Plan& p = b.p;
  std::vector<std::array<T, Cell::kGates>> gx(nthreads);  // each thread's registers
  threads(nthreads, [&](int t) { b.load_weights(t, nthreads); });
  if (!p.backward) {
    threads(nthreads, [&](int t) { b.load_gx(0, t, gx[t].data()); });
    for (int s = 0; s < p.steps; ++s) {
      delay(s);
      threads(nthreads, [&](int t) { b.stage(s, t, nthreads); });
      product_any<Block<Cell, T>, T>(b, b.job(s), nthreads, mma);
      threads(nthreads, [&](int t) { b.gates_forward(s, t, nthreads, gx[t].data()); });
      if (s + 1 < p.steps) {
        threads(nthreads, [&](int t) { b.load_gx(s + 1, t, gx[t].data()); });
        sync();
      }
    }
  } else {
    std::vector<typename Block<Cell, T>::RowInputs> in(nthreads);
    threads(nthreads, [&](int t) { b.load_inputs_ahead(p.steps - 1, t, in[t]); });
    for (int s = p.steps - 1; s >= -1; --s) {
      delay(s);
      if (b.rows(s + 1) > 0) {
        threads(nthreads, [&](int t) { b.stage(s, t, nthreads); });
        product_any<Block<Cell, T>, T>(b, b.job(s), nthreads, mma);
      }
      threads(nthreads, [&](int t) { b.gates_backward(s, t, nthreads, in[t]); });
      if (s >= 0) {
        threads(nthreads, [&](int t) { b.load_inputs_ahead(s - 1, t, in[t]); });
        sync();
      }
    }
  }
}

template <class Cell, class T>
int run(const Plan& p, const Params<T>& a, int nthreads, bool mma, int threaded,
        int skip_barrier, int delay_us) {
  const size_t smem = smem_layout(p, sizeof(T), sizeof(T)).total;
  // Shared memory starts as NaN: a read of a slot nobody wrote shows in the results.
  std::vector<std::vector<T>> mem(p.blocks,
                                  std::vector<T>(smem / sizeof(T) + 1,
                                                 std::numeric_limits<T>::quiet_NaN()));
  std::vector<Block<Cell, T>> blocks;
  for (int k = 0; k < p.blocks; ++k) {
    blocks.emplace_back(p, a, k, reinterpret_cast<unsigned char*>(mem[k].data()));
  }
  if (!threaded) {
    // Phase by phase: every block finishes a step (block 0, then 1, ...) before any block
    // starts the next, which is all the grid barrier guarantees.
    const int first = p.backward ? p.steps - 1 : 0;
    const int last = p.backward ? -1 : p.steps - 1;
    const int dir = p.backward ? -1 : 1;
    std::vector<std::vector<std::array<T, Cell::kGates>>> gx(
        p.blocks, std::vector<std::array<T, Cell::kGates>>(nthreads));
    for (auto& b : blocks) threads(nthreads, [&](int t) { b.load_weights(t, nthreads); });
    for (int s = first;; s += dir) {
      for (int k = 0; k < p.blocks; ++k) {
        const auto& b = blocks[k];
        const bool has_product = p.backward ? b.rows(s + 1) > 0 : true;
        if (has_product) {
          threads(nthreads, [&](int t) { b.stage(s, t, nthreads); });
          product_any<Block<Cell, T>, T>(b, b.job(s), nthreads, mma);
        }
        if (p.backward) {
          std::vector<typename Block<Cell, T>::RowInputs> in(nthreads);
          threads(nthreads, [&](int t) { b.load_inputs_ahead(s, t, in[t]); });
          threads(nthreads, [&](int t) { b.gates_backward(s, t, nthreads, in[t]); });
        } else {
          threads(nthreads, [&](int t) { b.load_gx(s, t, gx[k][t].data()); });
          threads(nthreads, [&](int t) { b.gates_forward(s, t, nthreads, gx[k][t].data()); });
        }
      }
      if (s == last) break;
    }
    return 0;
  }
  unsigned int counter = 0;
  std::vector<std::thread> pool;
  for (int k = 0; k < p.blocks; ++k) {
    pool.emplace_back([&, k] {
      const auto sync = [&] {
        if (!skip_barrier) barrier_arrive_and_wait<HostAtomics>(&counter, p.blocks, k == 0);
      };
      // Block 0 lags behind at every step; the others do not.
      const auto delay = [&](int) {
        if (k == 0 && delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
      };
      block_program<Cell, T>(blocks[k], nthreads, mma, sync, delay);
    });
  }
  for (auto& t : pool) t.join();
  return (counter & 0x7fffffffu) == 0 ? 0 : 3;  // every round must add exactly 2^31
}

template <class Cell, class T>
int emulate(int backward, int B, int H, int steps, int reverse, const int* sched,
            int blocks_max, int nthreads, bool mma, int threaded, int skip_barrier,
            int delay_us, void* const* ptrs) {
  Params<T> a;
  std::memset(static_cast<void*>(&a), 0, sizeof a);
  a.sched.batch = sched;
  a.sched.offset = sched + steps;
  const T** cin[] = {&a.gx, &a.h0, &a.c0, &a.w_hh, &a.b_hh};
  T** cout[] = {&a.y, &a.hn, &a.cn, &a.saved};
  const T** gin[] = {&a.grad_y, &a.grad_hn, &a.grad_cn};
  T** gout[] = {&a.grad_gx, &a.grad_gh, &a.grad_h0, &a.grad_c0};
  int k = 0;
  for (auto q : cin) *q = static_cast<const T*>(ptrs[k++]);
  for (auto q : cout) *q = static_cast<T*>(ptrs[k++]);
  for (auto q : gin) *q = static_cast<const T*>(ptrs[k++]);
  for (auto q : gout) *q = static_cast<T*>(ptrs[k++]);
  a.unit_params = static_cast<const T*>(ptrs[k++]);
  if (nthreads <= 0 || nthreads % kWarp != 0 || nthreads > kMaxWarps * kWarp) return 2;
  Plan p;
  if (!make_plan(Cell::kGates, B, H, steps, reverse != 0, backward != 0, sizeof(T), sizeof(T),
                 blocks_max, size_t(1) << 30, &p)) {
    return 1;
  }
  // As the launcher decides it (torch's CPU allocations are 16-byte aligned too).
  const void* staged = backward ? (Cell::kSeparateDgh ? a.grad_gh : a.grad_gx) : a.y;
  const auto aligned16 = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  p.vec_stage = product_depth(p) % int(16 / sizeof(T)) == 0 && aligned16(staged) &&
                (backward || aligned16(a.h0));
  return run<Cell, T>(p, a, nthreads, mma, threaded, skip_barrier, delay_us);
}

}  // namespace
}  // namespace persistent
}  // namespace fastrnn

extern "C" {

// cell: a CellKind; dtype: a DType, float32 or float64 (the numbers of fastrnn._C's
// <CELL>_KIND and DTYPE_* constants); mma: 1 runs the product the tensor-core way (tiles,
// K split, the tile's host twin), 0 the FFMA way.
// sched: int32 [2*steps] (batch sizes, then row offsets, by time). ptrs: 17 pointers in
// the order gx, h0, c0, w_hh, b_hh, y, hn, cn, saved, grad_y, grad_hn, grad_cn, grad_gx,
// grad_gh, grad_h0, grad_c0, unit_params (null where unused). Returns 0 on success, 1 when
// the plan does not fit, 2 on a bad argument, 3 when the barrier counter ended inconsistent.
int fastrnn_emulate(int cell, int dtype, int backward, int B, int H, int steps, int reverse,
                    const int* sched, int blocks_max, int nthreads, int mma, int threaded,
                    int skip_barrier, int delay_us, void* const* ptrs) {
  using namespace fastrnn;
  return with_cell(cell, 2, [&](auto c) {
    return dispatch(TypeList<float, double>{}, static_cast<DType>(dtype), 2, [&](auto tag) {
      return persistent::emulate<decltype(c), typename decltype(tag)::type>(
          backward, B, H, steps, reverse, sched, blocks_max, nthreads, mma != 0, threaded,
          skip_barrier, delay_us, ptrs);
    });
  });
}

// The number of blocks the plan uses for these sizes (0 when it does not fit).
int fastrnn_plan_blocks(int G, int B, int H, int blocks_max, long long smem_max, int t_bytes,
                        int backward) {
  fastrnn::persistent::Plan p;
  if (!fastrnn::persistent::make_plan(G, B, H, 1, false, backward != 0, t_bytes, 4, blocks_max,
                                      size_t(smem_max), &p)) {
    return 0;
  }
  return p.blocks;
}

// Barrier stress: `blocks` threads, `rounds` rounds; in round r each thread writes r to
// its slot, passes the barrier, then reads every slot of round r. Returns the number of
// slots seen without their value (0 for a correct barrier). skip_wait=1 arrives without
// waiting (a broken barrier), to show the check catches one.
long long fastrnn_barrier_stress(int blocks, int rounds, int skip_wait, int delay_us) {
  using namespace fastrnn::persistent;
  std::vector<std::atomic<int>> slots(size_t(blocks) * rounds);
  for (auto& s : slots) s.store(-1, std::memory_order_relaxed);
  unsigned int counter = 0;
  std::atomic<long long> violations{0};
  std::vector<std::thread> pool;
  for (int k = 0; k < blocks; ++k) {
    pool.emplace_back([&, k] {
      for (int r = 0; r < rounds; ++r) {
        if (delay_us > 0 && (r + k) % blocks == 0) {
          std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
        }
        slots[size_t(r) * blocks + k].store(r, std::memory_order_relaxed);
        if (skip_wait) {
          HostAtomics::fetch_add_release(&counter, k == 0 ? 0x80000000u - (blocks - 1u) : 1u);
        } else {
          barrier_arrive_and_wait<HostAtomics>(&counter, blocks, k == 0);
        }
        for (int o = 0; o < blocks; ++o) {
          if (slots[size_t(r) * blocks + o].load(std::memory_order_relaxed) != r) ++violations;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  return violations.load();
}

}  // extern "C"
