#pragma once
// What every fastrnn kernel file shares: loads/stores that compute in float for 16-bit
// types (with the conversion intrinsics, so that torch's -D__CUDA_NO_HALF_CONVERSIONS__
// and friends do not matter), the per-step grid, and the dtype dispatch.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.h"

namespace fastrnn {
namespace cuda {

// The type the gate math runs in: float for half and bfloat16, else the type itself.
template <typename T>
struct Acc {
  using type = T;
  __device__ __forceinline__ static T load(T x) { return x; }
  __device__ __forceinline__ static T store(T x) { return x; }
};
template <>
struct Acc<__half> {
  using type = float;
  __device__ __forceinline__ static float load(__half x) { return __half2float(x); }
  __device__ __forceinline__ static __half store(float x) { return __float2half_rn(x); }
};
template <>
struct Acc<__nv_bfloat16> {
  using type = float;
  __device__ __forceinline__ static float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ __forceinline__ static __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename T>
__device__ __forceinline__ acc_t<T> load(const T* p) {
  return Acc<T>::load(*p);
}
template <typename T>
__device__ __forceinline__ void store(T* p, acc_t<T> v) {
  *p = Acc<T>::store(v);
}

// A step's kernel covers [rows, width]: threadIdx.x + blockIdx.x * kThreads is the column,
// blockIdx.y the row, striding by gridDim.y (at most 65535) when there are more rows.
constexpr int kThreads = 128;
constexpr int64_t kMaxGridY = 65535;

inline dim3 step_grid(int64_t rows, int64_t width) {
  const int64_t x = (width + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
}

// Whether a launch over [rows, width] has nothing to do (an empty grid is a launch error).
inline bool empty_launch(int64_t rows, int64_t width) { return rows <= 0 || width <= 0; }

template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) with T the CUDA type for dtype; returns fn's result.
template <typename F>
cudaError_t dispatch(DType dtype, F&& fn) {
  switch (dtype) {
    case DType::kFloat:
      return fn(Tag<float>{});
    case DType::kDouble:
      return fn(Tag<double>{});
    case DType::kHalf:
      return fn(Tag<__half>{});
    case DType::kBFloat16:
      return fn(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastrnn
