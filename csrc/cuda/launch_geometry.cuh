#pragma once
// The per-step kernels' launch geometry. A step's kernel covers [rows, width]:
// threadIdx.x + blockIdx.x * kStepThreads is the column (hidden unit), blockIdx.y the row,
// striding by gridDim.y (at most 65535) when there are more rows.

#include <cuda_runtime.h>

#include <cstdint>

namespace fastrnn {
namespace cuda {

// Threads of a per-step kernel's block (the persistent kernels' blocks are persistent.cu's).
constexpr int kStepThreads = 128;
constexpr int64_t kMaxGridY = 65535;

inline dim3 step_grid(int64_t rows, int64_t width) {
  const int64_t x = (width + kStepThreads - 1) / kStepThreads;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
}

// Whether a launch over [rows, width] has nothing to do (an empty grid is a launch error).
inline bool empty_launch(int64_t rows, int64_t width) { return rows <= 0 || width <= 0; }

// This thread's column, and the rows it visits: for (row = blockIdx.y; row < rows; ...).
__device__ __forceinline__ int64_t step_column() {
  return static_cast<int64_t>(blockIdx.x) * kStepThreads + threadIdx.x;
}

}  // namespace cuda
}  // namespace fastrnn
