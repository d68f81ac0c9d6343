#pragma once
// Activations and their derivatives, host and device. On the host, float and double use
// branch-free polynomial forms that the compiler vectorises; the device uses its libm.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace fastrnn {

#if !defined(__CUDA_ARCH__)
// exp(x) for x clamped to [-87, 88] (the result stays a normal float); a NaN propagates
// through the arithmetic (no test for it: 20% of an LSTM gate loop). Cody-Waite range
// reduction and a degree-6 polynomial, within ~2 ulp; 2^n from the bits of the sum that
// rounded n (its low bits hold n), no float-to-int conversion.
inline float exp_clamped(float x) {
  x = x > 88.f ? 88.f : x;  // a NaN stays
  x = x < -87.f ? -87.f : x;
  const float round_magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + round_magic;  // round_magic + n
  const float n = shifted - round_magic;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float poly = p * r * r + r + 1.f;
  uint32_t shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  std::memcpy(&magic_bits, &round_magic, sizeof magic_bits);
  const uint32_t bits = (shifted_bits - magic_bits + 127u) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return poly * scale;
}
#endif

FASTRNN_HD float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.f / (1.f + expf(-x));
#else
  return 1.f / (1.f + exp_clamped(-x));
#endif
}

#if !defined(__CUDA_ARCH__)
// exp(x) - 1 for x clamped to [-40, 709] (below -40 it is -1 in double; up to 709 finite),
// within ~2 ulp; a NaN propagates. x = n ln2 + r, |r| <= ln2 / 2, with ln2 in two parts
// (n ln2_hi exact); expm1(r) from its Taylor series to r^13 / 13! (the rest < 1e-17 r);
// then expm1(x) = 2^n expm1(r) + (2^n - 1), 2^n from the bits of the sum that rounded n.
inline double expm1_clamped(double x) {
  x = x > 709.0 ? 709.0 : x;  // a NaN stays
  x = x < -40.0 ? -40.0 : x;
  const double round_magic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds
  const double shifted = x * 1.4426950408889634 + round_magic;  // round_magic + n
  const double n = shifted - round_magic;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const double small = p * r * r + r;  // expm1(r)
  uint64_t shifted_bits, magic_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  std::memcpy(&magic_bits, &round_magic, sizeof magic_bits);
  const uint64_t bits = (shifted_bits - magic_bits + 1023u) << 52;  // 2^n
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return scale * small + (scale - 1.0);
}
#endif

FASTRNN_HD double sigmoid(double x) {
#if defined(__CUDA_ARCH__)
  return 1.0 / (1.0 + ::exp(-x));
#else
  // 1 + exp(-x) with no cancellation; 0 where the result would be subnormal (x below
  // the log of the smallest normal double)
  return x < -708.3964185322641 ? 0.0 : 1.0 / (2.0 + expm1_clamped(-x));
#endif
}

FASTRNN_HD float tanh_act(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  // |x| < 0.625: odd minimax polynomial; otherwise 1 - 2 / (exp(2|x|) + 1).
  const float ax = x < 0.f ? -x : x;
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large_abs = 1.f - 2.f / (exp_clamped(2.f * ax) + 1.f);
  const float large = x < 0.f ? -large_abs : large_abs;
  return ax < 0.625f ? small : large;
#endif
}

FASTRNN_HD double tanh_act(double x) {
#if defined(__CUDA_ARCH__)
  return ::tanh(x);
#else
  // expm1(2|x|) / (expm1(2|x|) + 2), |x| clamped to 20 (tanh is 1 in double beyond 19.1)
  double ax = x < 0.0 ? -x : x;
  ax = ax > 20.0 ? 20.0 : ax;  // a NaN stays
  const double e = expm1_clamped(2.0 * ax);
  return std::copysign(e / (e + 2.0), x);
#endif
}

FASTRNN_HD float inverse_sqrt(float x) {
#if defined(__CUDA_ARCH__)
  return rsqrtf(x);
#else
  return 1.f / std::sqrt(x);
#endif
}

FASTRNN_HD double inverse_sqrt(double x) {
#if defined(__CUDA_ARCH__)
  return rsqrt(x);
#else
  return 1.0 / std::sqrt(x);
#endif
}

// relu that lets NaN through, as torch.relu does.
template <typename T>
FASTRNN_HD T relu(T x) {
  return x < T(0) ? T(0) : x;
}

// Derivatives written in terms of the activation's output y.
template <typename T>
FASTRNN_HD T dsigmoid_from_output(T y) {
  return y * (T(1) - y);
}
template <typename T>
FASTRNN_HD T dtanh_from_output(T y) {
  return T(1) - y * y;
}
// 1 for a NaN output, as torch's relu backward (threshold_backward) passes the gradient
// wherever the output is not <= 0.
template <typename T>
FASTRNN_HD T drelu_from_output(T y) {
  return y <= T(0) ? T(0) : T(1);
}

}  // namespace fastrnn
