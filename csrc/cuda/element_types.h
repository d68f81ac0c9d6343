#pragma once
// The storage types of the CUDA code, the type their math runs in, and the conversions
// between the two, host and device: both CUDA paths (the per-step units and the
// persistent blocks) and their host emulations convert through to_acc / from_acc.
// 16-bit types accumulate in float, load exactly and store rounded to nearest, through
// the conversion intrinsics (torch's -D__CUDA_NO_HALF_CONVERSIONS__ and friends remove the
// implicit ones). Where the CUDA headers are not on the include path (a plain C++ build of
// the persistent blocks), only float and double exist.

#include "../common/dtype.h"
#include "../common/macros.h"

namespace fastrnn {

// The type the math of storage type T runs in: float for the 16-bit types, else T.
template <class T>
struct AccumulationOf {
  using type = T;
};
template <class T>
using acc_t = typename AccumulationOf<T>::type;

// The DType of storage type T.
template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kFloat64;
};

// A stored value in the accumulation type, and back (rounded to nearest).
template <class T>
FASTRNN_HD acc_t<T> to_acc(T v) {
  return v;
}
template <class T>
FASTRNN_HD T from_acc(acc_t<T> v) {
  return v;
}

}  // namespace fastrnn

#if __has_include(<cuda_fp16.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fastrnn {

template <>
struct AccumulationOf<__half> {
  using type = float;
};
template <>
struct AccumulationOf<__nv_bfloat16> {
  using type = float;
};
template <>
struct DTypeOf<__half> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct DTypeOf<__nv_bfloat16> {
  static constexpr DType value = DType::kBFloat16;
};

template <>
FASTRNN_HD float to_acc<__half>(__half v) {
  return __half2float(v);
}
template <>
FASTRNN_HD float to_acc<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
FASTRNN_HD __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
FASTRNN_HD __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

}  // namespace fastrnn
#endif
