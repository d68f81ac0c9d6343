// C entry points to the persistent launchers for the GPU tests and their benchmark
// (tests/persistent_gpu.py builds it with persistent.cu and loads it with ctypes); the
// library's ops call persistent.h directly.

#include <cuda_runtime.h>

#include "cell_kinds.h"
#include "cuda/persistent/persistent.h"

using namespace fastrnn;
using namespace fastrnn::persistent;

extern "C" {

// cell: a CellKind; dtype: a DType (float32, bfloat16 or float16), the numbers of
// fastrnn._C's <CELL>_KIND and DTYPE_* constants. sched: device int32 [2*T]; barrier:
// device unsigned int; stream: a cudaStream_t. ptrs: 17 device pointers in the order gx,
// h0, c0, w_hh, b_hh, y, hn, cn, saved, grad_y, grad_hn, grad_cn, grad_gx, grad_gh,
// grad_h0, grad_c0, unit_params (null where unused). Returns 1 when launched, 0 when the launcher
// declined (or a CUDA call failed: then cudaGetLastError() says which), -1 for a bad cell.
int fastrnn_persistent_run(int cell, int dtype, int backward, int B, int H, int T, int reverse,
                           const int* sched, unsigned int* barrier, void* stream, int device,
                           void* const* p) {
  // This library may carry its own CUDA runtime (static cudart), whose current device is
  // not the caller's: set it.
  if (cudaSetDevice(device) != cudaSuccess) return 0;
  const Problem pr{static_cast<DType>(dtype), B, H, T, reverse != 0, sched, barrier,
                   static_cast<cudaStream_t>(stream), device};
  const ForwardTensors f{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[16]};
  const BackwardTensors b{p[9], p[10], p[11], p[1], p[2], p[3], p[5], p[8],
                          p[12], p[13], p[14], p[15], p[16]};
  return with_cell(cell, -1, [&](auto c) {
    using Cell = decltype(c);
    return int(backward ? persistent::backward<Cell>(pr, b) : persistent::forward<Cell>(pr, f));
  });
}

// The selection rule under the current FASTRNN_PERSISTENT: a Choice (0 kNo, 1 kYes,
// 2 kUnsupported), 3 when the setting is not auto, 0 or 1, -1 for a bad cell or device.
int fastrnn_persistent_choose(int cell, int dtype, int B, int H, int device, int backward) {
  if (cudaSetDevice(device) != cudaSuccess) return -1;
  const Setting setting = current_setting();
  if (setting.mode == Setting::kInvalid) return 3;
  return with_cell(cell, -1, [&](auto c) {
    return int(choose<decltype(c)>(setting.mode, static_cast<DType>(dtype), B, H, device,
                                   backward != 0));
  });
}

int fastrnn_persistent_last_error() { return static_cast<int>(cudaGetLastError()); }

// 0 when this library's CUDA runtime can use the driver (e.g. 35,
// cudaErrorInsufficientDriver, when nvcc's runtime is newer than the installed driver).
int fastrnn_persistent_runtime_status() {
  int count = 0;
  return static_cast<int>(cudaGetDeviceCount(&count));
}

}  // extern "C"
