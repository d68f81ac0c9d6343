#pragma once
// The element types of the GPU code, by number: the kernels' dispatch, the persistent
// launchers' Problem and the C entry points of the tests (through fastrnn._C's DTYPE_*
// constants) all use these values. Plain C++ (no ATen, no CUDA), so that CUDA sources and
// host-only builds can include it; csrc/cuda/torch_glue.h maps at::ScalarType onto it and
// csrc/cuda/element_types.h maps it onto the storage types.

namespace fastrnn {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

}  // namespace fastrnn
