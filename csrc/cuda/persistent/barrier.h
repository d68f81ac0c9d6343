#pragma once
// Grid-wide barrier for a cooperative (all blocks co-resident) launch: one 32-bit counter
// in global memory, generation-based, so it never needs resetting between barriers or
// launches as long as its low 31 bits start at 0 (the launcher zeroes it anyway, in case
// an earlier launch was aborted half-way).
//
// Each round every block adds to the counter once: block 0 adds 2^31 - (n-1), the others 1.
// A round adds exactly 2^31, so bit 31 flips exactly when the last of the n blocks arrives
// (before that the partial sum stays below the next multiple of 2^31). A block waits until
// bit 31 differs from the value it saw when it arrived. Release on arrival, acquire on
// leaving: every write before the barrier in any block happens-before every read after it.
//
// The protocol is written once over an Ops policy: device atomics below, std::atomic_ref
// in the host emulation (which runs one std::thread per block through the same function).

#include "../../common/macros.h"

namespace fastrnn {
namespace persistent {

template <class Ops>
FASTRNN_HD void barrier_arrive_and_wait(unsigned int* counter, unsigned int nblocks,
                                        bool first_block) {
  const unsigned int add = first_block ? 0x80000000u - (nblocks - 1u) : 1u;
  const unsigned int old = Ops::fetch_add_release(counter, add);
  while (((old ^ Ops::load_acquire(counter)) & 0x80000000u) == 0u) Ops::pause();
}

#if defined(__CUDACC__)
struct DeviceAtomics {
  __device__ static unsigned int fetch_add_release(unsigned int* p, unsigned int v) {
    __threadfence();  // the block's writes (ordered by the __syncthreads before) go first
    return atomicAdd(p, v);
  }
  __device__ static unsigned int load_acquire(unsigned int* p) {
    unsigned int v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
  }
  __device__ static void pause() { __nanosleep(32); }
};

// All threads of every block call this; thread 0 of each block does the protocol.
__device__ __forceinline__ void grid_barrier(unsigned int* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    barrier_arrive_and_wait<DeviceAtomics>(counter, gridDim.x, blockIdx.x == 0);
    __threadfence();
  }
  __syncthreads();
}
#endif

}  // namespace persistent
}  // namespace fastrnn
