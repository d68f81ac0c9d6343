#pragma once
// The per-step launch geometry every kernel file shares. A step's kernel covers
// [rows, width]: threadIdx.x + blockIdx.x * kThreads is the column (hidden unit), blockIdx.y
// the row, striding by gridDim.y (at most 65535) when there are more rows.

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "dtypes.h"

namespace fastrnn {
namespace cuda {

constexpr int kThreads = 128;
constexpr int64_t kMaxGridY = 65535;

inline dim3 step_grid(int64_t rows, int64_t width) {
  const int64_t x = (width + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
}

// Whether a launch over [rows, width] has nothing to do (an empty grid is a launch error).
inline bool empty_launch(int64_t rows, int64_t width) { return rows <= 0 || width <= 0; }

// This thread's column, and the rows it visits: for (row = first_row(); row < rows; ...).
__device__ __forceinline__ int64_t step_column() {
  return static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
}

// Calls f with std::bool_constant<flag> for each run-time flag, so that a launcher picks
// the kernel instance whose compile-time bools match: f(kA, kB) uses decltype(kA)::value.
template <typename F>
cudaError_t with_flags(bool a, F&& f) {
  return a ? f(std::true_type{}) : f(std::false_type{});
}

template <typename F>
cudaError_t with_flags(bool a, bool b, F&& f) {
  return with_flags(a, [&](auto kA) {
    return b ? f(kA, std::true_type{}) : f(kA, std::false_type{});
  });
}

}  // namespace cuda
}  // namespace fastrnn
