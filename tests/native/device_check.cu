// Standalone device checks of the persistent kernels' two hardware contracts, run by
// scripts/gpu_check.py before anything else on a GPU:
//   1. mma.h: the 16x8x16 tensor-core tile and its fragment layout (frag_coords), bf16 and
//      fp16, over several K ranges; small integers, so every product is exact.
//   2. barrier.h: the grid barrier over one block per SM, thousands of rounds; after each
//      barrier every block reads every other block's slot with load_cross (the 16-bit
//      staging load of block.h) and counts values older than the round (stale reads).
// Build from the repository root:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I csrc tests/native/device_check.cu
// Exit status 0 when every check passes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda/persistent/barrier.h"
#include "cuda/persistent/block.h"
#include "cuda/persistent/mma.h"

using namespace fastrnn::persistent;

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    const cudaError_t error_ = (call);                                                \
    if (error_ != cudaSuccess) {                                                      \
      std::printf("CUDA error %s at line %d\n", cudaGetErrorString(error_), __LINE__); \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

constexpr int kLd = 136;  // row stride of the staged operands: K = 128 plus 8 of padding

// One warp: x [16, kLd] and w [8, kLd] staged to shared memory; out [16, 8] = the tile
// product over k in [k0, k1), each lane writing its 4 fragment values where frag_coords
// says they belong.
template <class T>
__global__ void tile_kernel(const float* x, const float* w, int k0, int k1, float* out) {
  __shared__ __align__(16) T xs[16 * kLd], ws[8 * kLd];
  for (int i = threadIdx.x; i < 16 * kLd; i += 32) xs[i] = T(x[i]);
  for (int i = threadIdx.x; i < 8 * kLd; i += 32) ws[i] = T(w[i]);
  __syncwarp();
  float frag[4] = {0.f, 0.f, 0.f, 0.f};
  tile_product<T>(xs, ws, kLd, k0, k1, threadIdx.x, frag);
  for (int i = 0; i < 4; ++i) {
    int r, c;
    frag_coords(threadIdx.x, i, &r, &c);
    out[r * 8 + c] = frag[i];
  }
}

template <class T>
int check_tile(const char* name) {
  std::vector<float> x(16 * kLd), w(8 * kLd);
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < kLd; ++k) x[r * kLd + k] = float((r * 7 + k * 3) % 9 - 4);
  }
  for (int c = 0; c < 8; ++c) {
    for (int k = 0; k < kLd; ++k) w[c * kLd + k] = float((c * 5 + k * 11) % 7 - 3);
  }
  float *dx, *dw, *dout;
  CHECK_CUDA(cudaMalloc(&dx, x.size() * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&dw, w.size() * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&dout, 128 * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dw, w.data(), w.size() * sizeof(float), cudaMemcpyHostToDevice));
  const int ranges[][2] = {{0, 16}, {0, 32}, {16, 48}, {32, 96}, {0, 128}};
  int bad = 0;
  for (const auto& range : ranges) {
    CHECK_CUDA(cudaMemset(dout, 0xff, 128 * sizeof(float)));  // NaN: unwritten shows
    tile_kernel<T><<<1, 32>>>(dx, dw, range[0], range[1], dout);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    float got[128];
    CHECK_CUDA(cudaMemcpy(got, dout, sizeof got, cudaMemcpyDeviceToHost));
    for (int r = 0; r < 16; ++r) {
      for (int c = 0; c < 8; ++c) {
        double want = 0;
        for (int k = range[0]; k < range[1]; ++k) want += double(x[r * kLd + k]) * w[c * kLd + k];
        if (got[r * 8 + c] != float(want)) {
          if (bad < 5) {
            std::printf("  %s k [%d, %d) row %d col %d: got %g, want %g\n", name, range[0],
                        range[1], r, c, got[r * 8 + c], want);
          }
          ++bad;
        }
      }
    }
  }
  CHECK_CUDA(cudaFree(dx));
  CHECK_CUDA(cudaFree(dw));
  CHECK_CUDA(cudaFree(dout));
  std::printf("tile product %s: %s (%d mismatches over %d K ranges)\n", name,
              bad ? "FAIL" : "ok", bad, int(sizeof ranges / sizeof ranges[0]));
  return bad;
}

// Each round: every block stores `round` into its slot, barrier, every block reads all
// slots (load_cross, 16 bits) and counts the stale ones, barrier (no block overwrites a
// slot before all have read it).
__global__ void barrier_kernel(unsigned int* counter, unsigned short* slots, int rounds,
                               unsigned long long* stale) {
  for (int round = 1; round <= rounds; ++round) {
    if (threadIdx.x == 0) slots[blockIdx.x] = static_cast<unsigned short>(round);
    grid_barrier(counter);
    unsigned long long count = 0;
    for (int b = threadIdx.x; b < int(gridDim.x); b += blockDim.x) {
      count += load_cross(slots + b) != static_cast<unsigned short>(round);
    }
    if (count) atomicAdd(stale, count);
    grid_barrier(counter);
  }
}

int check_barrier(int blocks, int threads, int rounds) {
  unsigned int* counter;
  unsigned short* slots;
  unsigned long long* stale;
  CHECK_CUDA(cudaMalloc(&counter, sizeof *counter));
  CHECK_CUDA(cudaMalloc(&slots, blocks * sizeof *slots));
  CHECK_CUDA(cudaMalloc(&stale, sizeof *stale));
  CHECK_CUDA(cudaMemset(counter, 0, sizeof *counter));
  CHECK_CUDA(cudaMemset(slots, 0, blocks * sizeof *slots));
  CHECK_CUDA(cudaMemset(stale, 0, sizeof *stale));
  void* args[] = {&counter, &slots, &rounds, &stale};
  cudaEvent_t start, end;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&end));
  CHECK_CUDA(cudaEventRecord(start));
  CHECK_CUDA(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(barrier_kernel), dim3(blocks),
                                         dim3(threads), args, 0, nullptr));
  CHECK_CUDA(cudaEventRecord(end));
  CHECK_CUDA(cudaDeviceSynchronize());
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, end));
  unsigned long long stale_reads = 0;
  CHECK_CUDA(cudaMemcpy(&stale_reads, stale, sizeof stale_reads, cudaMemcpyDeviceToHost));
  std::printf("grid barrier: %d blocks x %d threads, %d rounds, %.2f us per barrier, "
              "%llu stale reads: %s\n", blocks, threads, rounds, 1000.0 * ms / (2.0 * rounds),
              stale_reads, stale_reads ? "FAIL" : "ok");
  CHECK_CUDA(cudaFree(counter));
  CHECK_CUDA(cudaFree(slots));
  CHECK_CUDA(cudaFree(stale));
  return stale_reads != 0;
}

int main() {
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s: sm_%d%d, %d SMs, %zu KiB opt-in shared memory per block\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount,
              prop.sharedMemPerBlockOptin / 1024);
  int failures = check_tile<__nv_bfloat16>("bf16") + check_tile<__half>("fp16");
  failures += check_barrier(prop.multiProcessorCount, 256, 20000);
  failures += check_barrier(prop.multiProcessorCount / 2, 64, 5000);
  return failures ? 1 : 0;
}
