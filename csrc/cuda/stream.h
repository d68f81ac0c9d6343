#pragma once
// The CUDA backend's two contacts with the CUDA runtime outside the kernels: the caller's
// current stream, through c10's device-generic API (so that this compiles against a
// CPU-only torch's headers too), and the check of a launch's error.

#include <c10/core/Device.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace fastrnn {
namespace cuda {

// The caller's current stream on `device` (a CUDA device).
inline cudaStream_t current_stream(const c10::Device& device) {
  const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return static_cast<cudaStream_t>(impl.getStream(device).native_handle());
}

inline void check_launch(cudaError_t error, const char* kernel) {
  TORCH_CHECK(error == cudaSuccess, "fastrnn: CUDA kernel ", kernel, " failed: ",
              cudaGetErrorString(error));
}

}  // namespace cuda
}  // namespace fastrnn
