#pragma once
// A barrier for the threads of one at::parallel_for region that walk time together.
// Each participant arrives with a weight (the number of work slices it runs); the barrier
// opens when the weights of one round sum to the total. A runtime that gives the region
// fewer threads than slices, or none at all (a nested call runs every slice in one
// thread), therefore still completes every round.

#include <atomic>
#include <cstdint>
#include <thread>

namespace fastrnn {
namespace cpu {

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class SpinBarrier {
 public:
  explicit SpinBarrier(int64_t total_weight) : total_(total_weight) {}

  // Waits until the round's arrivals reach the total weight. Writes made before the call
  // are visible to every participant after it.
  void arrive_and_wait(int64_t weight) {
    const int64_t round = round_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(weight, std::memory_order_acq_rel) + weight == total_) {
      arrived_.store(0, std::memory_order_relaxed);
      round_.fetch_add(1, std::memory_order_release);
      return;
    }
    // Spin briefly (a step takes microseconds), then give the core away so that an
    // oversubscribed machine still makes progress.
    constexpr int kSpinsBeforeYield = 4096;
    for (int spins = 0; round_.load(std::memory_order_acquire) == round; ++spins) {
      if (spins < kSpinsBeforeYield) {
        spin_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  const int64_t total_;
  alignas(64) std::atomic<int64_t> arrived_{0};
  alignas(64) std::atomic<int64_t> round_{0};
};

}  // namespace cpu
}  // namespace fastrnn
