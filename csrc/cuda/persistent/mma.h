#pragma once
// The one tensor-core operation of the persistent kernels, a warp's 16x8 tile of
//   out[r, c] = sum_{k0 <= k < k1} x[r, k] * w[c, k]      (r < 16, c < 8)
// x: 16 rows, w: 8 columns, both row stride ld (elements), k0 and k1 multiples of 16.
// Each lane ends with 4 of the 128 results, at the positions frag_coords gives.
//
// Device (16-bit T): mma.sync.m16n8k16 (bf16 or f16 inputs, f32 accumulation) with the
// fragment layout of the PTX ISA for that shape. The host emulation
// (tests/native/persistent_emulation.cpp) runs a twin of the tile, the same 4 dot products
// per lane in plain loops at the positions frag_coords gives, so it checks everything
// around the tile (tiling, K split, padding, frag_coords -> (r, c) stores) but NOT that
// the device fragments below really hold the elements frag_coords says: that needs a GPU.

#include <cstdint>

#include "../../common/macros.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastrnn {
namespace persistent {

// Result i (0..3) of lane `lane`: row g or g+8, column 2t or 2t+1 (g = lane/4, t = lane%4).
FASTRNN_HD void frag_coords(int lane, int i, int* r, int* c) {
  *r = (lane >> 2) + (i >= 2 ? 8 : 0);
  *c = 2 * (lane & 3) + (i & 1);
}

#if defined(__CUDACC__)
template <class T>
__device__ __forceinline__ void mma_16x8x16(float* d, const uint32_t* a, const uint32_t* b);

template <>
__device__ __forceinline__ void mma_16x8x16<__nv_bfloat16>(float* d, const uint32_t* a,
                                                            const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma_16x8x16<__half>(float* d, const uint32_t* a,
                                                     const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// x, w in shared memory; ld even (so every pair below is 4-byte aligned).
// A fragment (16x16, row-major): a[0] = x[g, k+2t..+1], a[1] = x[g+8, k+2t..], a[2] =
// x[g, k+8+2t..], a[3] = x[g+8, k+8+2t..]. B fragment (16x8, "col": k contiguous per
// column): b[0] = w[g, k+2t..+1], b[1] = w[g, k+8+2t..]. D: d[i] at frag_coords(lane, i).
template <class T>
__device__ __forceinline__ void tile_product(const T* x, const T* w, int ld, int k0, int k1,
                                             int lane, float* out) {
  const int g = lane >> 2, t = lane & 3;
  const T* x0 = x + g * ld + 2 * t;
  const T* x8 = x0 + 8 * ld;
  const T* w0 = w + g * ld + 2 * t;
  // Two accumulators over alternate chunks: two independent mma chains instead of one.
  float acc0[4] = {0.f, 0.f, 0.f, 0.f}, acc1[4] = {0.f, 0.f, 0.f, 0.f};
  const auto chunk = [&](int k, float* acc) {
    uint32_t a[4], b[2];
    a[0] = *reinterpret_cast<const uint32_t*>(x0 + k);
    a[1] = *reinterpret_cast<const uint32_t*>(x8 + k);
    a[2] = *reinterpret_cast<const uint32_t*>(x0 + k + 8);
    a[3] = *reinterpret_cast<const uint32_t*>(x8 + k + 8);
    b[0] = *reinterpret_cast<const uint32_t*>(w0 + k);
    b[1] = *reinterpret_cast<const uint32_t*>(w0 + k + 8);
    mma_16x8x16<T>(acc, a, b);
  };
  int k = k0;
  for (; k + 16 < k1; k += 32) {
    chunk(k, acc0);
    chunk(k + 16, acc1);
  }
  if (k < k1) chunk(k, acc0);
  for (int i = 0; i < 4; ++i) out[i] += acc0[i] + acc1[i];
}
#endif

}  // namespace persistent
}  // namespace fastrnn
