#pragma once
// The element types of the CUDA code and their conversions: 16-bit types load as float and
// store rounded to nearest, through the conversion intrinsics (so torch's
// -D__CUDA_NO_HALF_CONVERSIONS__ and friends do not matter). Host and device: the per-unit
// step functions (*_step.h) also build on the host for tests/native/cuda_emulation.cpp.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "../common/macros.h"
#include "launch.h"

namespace fastrnn {
namespace cuda {

// The type the gate math runs in: float for half and bfloat16, else the type itself.
template <typename T>
struct Acc {
  using type = T;
  FASTRNN_HD static T load(T x) { return x; }
  FASTRNN_HD static T store(T x) { return x; }
};
template <>
struct Acc<__half> {
  using type = float;
  FASTRNN_HD static float load(__half x) { return __half2float(x); }
  FASTRNN_HD static __half store(float x) { return __float2half_rn(x); }
};
template <>
struct Acc<__nv_bfloat16> {
  using type = float;
  FASTRNN_HD static float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  FASTRNN_HD static __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename T>
FASTRNN_HD acc_t<T> load(const T* p) {
  return Acc<T>::load(*p);
}
template <typename T>
FASTRNN_HD void store(T* p, acc_t<T> v) {
  *p = Acc<T>::store(v);
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) with T the element type for dtype; returns fn's result.
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
