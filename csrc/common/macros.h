#pragma once

// Marks the per-element math that the CPU loop and the CUDA kernels share.
#if defined(__CUDACC__)
#define FASTRNN_HD __host__ __device__ __forceinline__
#else
#define FASTRNN_HD inline
#endif
