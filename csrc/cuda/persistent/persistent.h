#pragma once
// Persistent GPU recurrences: one cooperative launch walks the whole sequence; each block
// keeps its slice of W_hh in shared memory and owns all gates of its hidden units; one
// grid-wide barrier per step. Raw pointers, contiguous tensors, storage dtype `dtype`
// everywhere (float accumulation). Cell is a cell policy (csrc/cells/policy.h; G =
// Cell::kGates, S = Cell::kSaved). Shapes as the ops' (csrc/common/recurrence.h), P = H:
//   ForwardTensors:  gx [N, G*H], h0 [B, H], c0 [B, H] (kCellState), w_hh [G*H, H],
//                    b_hh [G*H] (kRecurrentBias, may be null) read;
//                    y [N, H], hn [B, H], cn [B, H] (kCellState), saved [N, S*H] written
//                    (saved may be null when no backward will run).
//   BackwardTensors: grad_y [N, H], grad_hn [B, H], grad_cn [B, H] (kCellState), h0, c0,
//                    w_hh, y, saved read; grad_gx [N, G*H], grad_gh [N, G*H]
//                    (kSeparateDgh: the gradient w.r.t. h_prev @ w_hh^T + b_hh, which the
//                    caller turns into grad_w_hh and grad_b_hh), grad_h0 [B, H],
//                    grad_c0 [B, H] (kCellState) written.
//   Both: unit_params [K*H] (K = Cell::kUnitParams > 0, the LSTM variants' peepholes) read.
// Pointers a cell does not use are null. The recurrent weight gradients are GEMMs the
// caller runs after the backward launch (grad^T @ h_prev with grad = grad_gh for
// kSeparateDgh cells, else grad_gx), as the per-step path does.
//
// Problem.sched: device int32 [2*T]: batch_sizes followed by the packed row offset of each
// time step (exclusive prefix sum; Schedule::batch_sizes and Schedule::offsets in
// csrc/common/schedule.h); N = sum(batch_sizes) must fit an int32. barrier: device memory
// for one unsigned int, not shared with a concurrent launch (the launcher zeroes it on
// `stream`). The current device must be `device`.
//
// forward / backward return false without launching anything when the shape does not fit
// (see choose) or the grid cannot be co-resident at launch time, so the caller can fall
// back to the per-step path (cudaGetLastError() is then cudaSuccess); they also return
// false if a CUDA call fails, and leave that error in cudaGetLastError().
// LSTM with projection (proj_size > 0) and float64 are not supported: call the per-step path.

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../../common/dtype.h"
#include "plan.h"

namespace fastrnn {
namespace persistent {

struct Problem {
  DType dtype;
  int B, H, T;        // batch (rows of the longest step), hidden size, steps
  bool reverse;
  const int* sched;   // device int32 [2*T]
  unsigned int* barrier;
  cudaStream_t stream;
  int device;
};

struct ForwardTensors {
  const void *gx, *h0, *c0, *w_hh, *b_hh;
  void *y, *hn, *cn, *saved;
  const void* unit_params = nullptr;  // [K*H] (Cell::kUnitParams > 0: peepholes)
};

struct BackwardTensors {
  const void *grad_y, *grad_hn, *grad_cn, *h0, *c0, *w_hh, *y, *saved;
  void *grad_gx, *grad_gh, *grad_h0, *grad_c0;
  const void* unit_params = nullptr;  // as in ForwardTensors
};

// Instantiated in persistent.cu for every cell of csrc/cells/all.h.
template <class Cell>
bool forward(const Problem& pr, const ForwardTensors& t);
template <class Cell>
bool backward(const Problem& pr, const BackwardTensors& t);

// Whether the kernels exist for dtype (float32, float16, bfloat16).
constexpr bool takes(DType dtype) { return dtype != DType::kFloat64; }

// FASTRNN_PERSISTENT, read at every call: auto (or unset, or empty), 0 or 1.
struct Setting {
  enum Mode { kAuto, kNever, kForced, kInvalid };
  Mode mode;
  const char* text;  // as set ("auto" when unset or empty), for messages
};

inline Setting current_setting() {
  const char* env = std::getenv("FASTRNN_PERSISTENT");
  const char* text = env == nullptr || env[0] == '\0' ? "auto" : env;
  const Setting::Mode mode = std::strcmp(text, "auto") == 0 ? Setting::kAuto
                             : std::strcmp(text, "0") == 0  ? Setting::kNever
                             : std::strcmp(text, "1") == 0  ? Setting::kForced
                                                            : Setting::kInvalid;
  return {mode, text};
}

// Selection rule. Forward and backward are chosen separately (`backward`): both paths
// write and read the same saved layouts, so they mix freely. setting (not kInvalid, which
// the caller reports):
//   kNever   never: kNo.
//   kForced  kYes whenever the shape fits, else kUnsupported, which the caller must turn
//            into an error.
//   kAuto    kYes when the cell is a kAutoPersistentCell (plan.h), the shape fits and
//            auto_prefers(dtype, G, B, H), else kNo.
// "Fits": the device supports cooperative launch, and the plan of plan.h (one block per
// SM, at most one block per hidden unit) fits a block's shared memory (opt-in limit) with
// at least one block per SM by the occupancy calculator.
enum class Choice { kNo, kYes, kUnsupported };

// Where auto takes the persistent kernels: where they were faster than the per-step path
// on an H200 (benchmarks/results/nvidia-h200-2026-12-04-auto/; T=100, B in {1, 8, 16, 64},
// H = I in {256, 512, 1024}, every cell, forward and forward+backward, both paths and
// cuDNN in the same run). Speed of the persistent path over the per-step one:
// - bfloat16 and float16, G*B*H <= 131072 (G gates; the LSTM's B*H <= 32768): 1.09-4.23x
//   in all 180 cases; beyond it (LSTM and GRU at B=64, H=1024) 0.92-1.18x.
// - float32, B <= 16 and H <= 512 (H <= 1024 for cells of at most 3 gates), two runs of
//   the float32 grid: 0.87-3.90x and 1.12-4.05x, slower in 2 of 63 cases in the first
//   run (LSTM H=512 B=8 forward+backward 0.87x, RNN relu H=1024 B=16 forward 0.93x);
//   beyond it 0.56-1.36x and 0.73-1.61x.
// - T in {1, 4, 16} (B=8, H=256, LSTM, GRU and RNN tanh, float32 and bfloat16): as fast or
//   faster than the per-step path in 23 of 24 cases, single steps included, so T is not
//   part of the rule.
// - Only inside the measured range: H from 256 to 1024, B at most 64. Smaller H, larger B
//   and larger H were not timed, so they keep the per-step path.
constexpr int kAutoMinHidden = 256, kAutoMaxHidden = 1024, kAutoMaxBatch = 64;
constexpr int64_t kAutoMaxWork16 = 131072;  // G*B*H, bfloat16 and float16
constexpr int kAutoMaxBatch32 = 16;         // float32
constexpr int kAutoMaxHidden32 = 512;       // float32, LSTM; twice this for at most 3 gates
constexpr bool auto_prefers(DType dtype, int gates, int B, int H) {
  if (H < kAutoMinHidden || H > kAutoMaxHidden || B > kAutoMaxBatch) return false;
  if (dtype == DType::kFloat32) {
    return B <= kAutoMaxBatch32 && H <= (gates <= 3 ? 2 : 1) * kAutoMaxHidden32;
  }
  return int64_t{gates} * B * H <= kAutoMaxWork16;
}
template <class Cell>
Choice choose(Setting::Mode setting, DType dtype, int B, int H, int device, bool backward);
// Whether the shape fits on `device` (the "fits" above), whatever the setting.
template <class Cell>
bool fits(DType dtype, int B, int H, int device, bool backward);

}  // namespace persistent
}  // namespace fastrnn
