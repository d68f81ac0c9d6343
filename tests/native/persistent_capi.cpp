// C entry points to the persistent launchers for the GPU tests and their benchmark
// (tests/persistent_gpu.py builds it with persistent.cu and loads it with ctypes); the
// library's ops call persistent.h directly.

#include <cuda_runtime.h>

#include "cuda/persistent/persistent.h"

namespace {
using namespace fastrnn::persistent;

Cell cell_of(int cell) {
  return cell == 0 ? Cell::kLstm : cell == 1 ? Cell::kGru : cell == 2 ? Cell::kRnnTanh : Cell::kRnnRelu;
}
Dtype dtype_of(int dtype) {
  return dtype == 0 ? Dtype::kFloat32 : dtype == 1 ? Dtype::kBFloat16 : Dtype::kFloat16;
}
}  // namespace

extern "C" {

// cell: 0 LSTM, 1 GRU, 2 RNN tanh, 3 RNN relu; dtype: 0 float32, 1 bfloat16, 2 float16.
// sched: device int32 [2*T]; barrier: device unsigned int; stream: a cudaStream_t.
// ptrs: 16 device pointers in the order gx, h0, c0, w_hh, b_hh, y, hn, cn, saved, grad_y,
// grad_hn, grad_cn, grad_gx, grad_gh, grad_h0, grad_c0 (null where unused).
// Returns 1 when launched, 0 when the launcher declined (or a CUDA call failed: then
// cudaGetLastError() says which).
int fastrnn_persistent_run(int cell, int dtype, int backward, int B, int H, int T, int reverse,
                           const int* sched, unsigned int* barrier, void* stream, int device,
                           void* const* p) {
  // This library may carry its own CUDA runtime (static cudart), whose current device is
  // not the caller's: set it.
  if (cudaSetDevice(device) != cudaSuccess) return 0;
  const Problem pr{cell_of(cell), dtype_of(dtype), B, H, T, reverse != 0, sched, barrier,
                   static_cast<cudaStream_t>(stream), device};
  bool ok = false;
  if (!backward) {
    switch (cell) {
      case 0: ok = lstm_forward(pr, p[0], p[1], p[2], p[3], p[5], p[6], p[7], p[8]); break;
      case 1: ok = gru_forward(pr, p[0], p[1], p[3], p[4], p[5], p[6], p[8]); break;
      default: ok = rnn_forward(pr, p[0], p[1], p[3], p[5], p[6]); break;
    }
  } else {
    switch (cell) {
      case 0:
        ok = lstm_backward(pr, p[9], p[10], p[11], p[1], p[2], p[3], p[5], p[8], p[12], p[14],
                           p[15]);
        break;
      case 1: ok = gru_backward(pr, p[9], p[10], p[1], p[3], p[5], p[8], p[12], p[13], p[14]); break;
      default: ok = rnn_backward(pr, p[9], p[10], p[1], p[3], p[5], p[12], p[14]); break;
    }
  }
  return ok ? 1 : 0;
}

// choose_persistent: 0 kNo, 1 kYes, 2 kUnsupported, 3 kBadSetting.
int fastrnn_persistent_choose(int cell, int dtype, int B, int H, int device, int backward) {
  if (cudaSetDevice(device) != cudaSuccess) return -1;
  return static_cast<int>(choose_persistent(cell_of(cell), dtype_of(dtype), B, H, device, backward != 0));
}

int fastrnn_persistent_last_error() { return static_cast<int>(cudaGetLastError()); }

// 0 when this library's CUDA runtime can use the driver (e.g. 35,
// cudaErrorInsufficientDriver, when nvcc's runtime is newer than the installed driver).
int fastrnn_persistent_runtime_status() {
  int count = 0;
  return static_cast<int>(cudaGetDeviceCount(&count));
}

}  // extern "C"
