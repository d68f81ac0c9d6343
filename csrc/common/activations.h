#pragma once
// Activations and their derivatives, host and device. float on the host uses
// branch-free polynomial forms that the compiler vectorises; double uses libm.

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

FASTRNN_HD double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }

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

FASTRNN_HD double tanh_act(double x) { return ::tanh(x); }

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
