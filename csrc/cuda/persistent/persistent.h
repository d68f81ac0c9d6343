#pragma once
// Persistent GPU recurrences: one cooperative launch walks the whole sequence; each block
// keeps its slice of W_hh in shared memory and owns all gates of its hidden units; one
// grid-wide barrier per step. Raw pointers, contiguous tensors, storage dtype `dtype`
// everywhere (float accumulation). Shapes as the CPU ops (csrc/ops.cpp):
//   gx [N, G*H], h0 [B, H], c0 [B, H], w_hh [G*H, H], b_hh [G*H] (GRU, may be null),
//   y [N, H], hn [B, H], cn [B, H], saved [N, S*H] (S = 5 LSTM, 4 GRU, 0 RNN; may be null
//   when no backward will run),
//   grad_gx [N, G*H], grad_gh [N, G*H] (GRU: gradient w.r.t. h_prev @ w_hh^T + b_hh,
//   which the caller turns into grad_w_hh and grad_b_hh), grad_h0 [B, H], grad_c0 [B, H].
// The recurrent weight gradients are GEMMs the caller runs after the backward launch
// (LSTM, RNN: grad_gx^T @ h_prev; GRU: grad_gh^T @ h_prev), as the CPU ops do.
//
// sched: device int32 [2*T]: batch_sizes (as int32) followed by the packed row offset of
// each time step (exclusive prefix sum), see fill_schedule; N = sum(batch_sizes) must fit
// an int32. barrier: device memory for one unsigned int, not shared with a concurrent
// launch (the launcher zeroes it on `stream`). The current device must be `device`.
//
// Every launcher returns false without launching anything when the shape does not fit
// (see choose_persistent) or the grid cannot be co-resident at launch time, so the caller
// can fall back to the per-step path (cudaGetLastError() is then cudaSuccess); it also
// returns false if a CUDA call fails, and leaves that error in cudaGetLastError().
// LSTM with projection (proj_size > 0) is not supported: call the per-step path.

#include <cuda_runtime.h>

#include <cstdint>

namespace fastrnn {
namespace persistent {

// The host side of `sched` (copy it to the device, e.g. from pinned memory without a
// sync): sched[0, T) = batch_sizes, sched[T, 2T) = first packed row of each time step.
inline void fill_schedule(const int64_t* batch_sizes, int T, int* sched) {
  int64_t offset = 0;
  for (int t = 0; t < T; ++t) {
    sched[t] = static_cast<int>(batch_sizes[t]);
    sched[T + t] = static_cast<int>(offset);
    offset += batch_sizes[t];
  }
}

enum class Dtype { kFloat32, kBFloat16, kFloat16 };
enum class Cell { kLstm, kGru, kRnnTanh, kRnnRelu };

struct Problem {
  Cell cell;
  Dtype dtype;
  int B, H, T;        // batch (rows of the longest step), hidden size, steps
  bool reverse;
  const int* sched;   // device int32 [2*T]
  unsigned int* barrier;
  cudaStream_t stream;
  int device;
};

bool lstm_forward(const Problem& pr, const void* gx, const void* h0, const void* c0,
                  const void* w_hh, void* y, void* hn, void* cn, void* saved);
bool lstm_backward(const Problem& pr, const void* grad_y, const void* grad_hn,
                   const void* grad_cn, const void* h0, const void* c0, const void* w_hh,
                   const void* y, const void* saved, void* grad_gx, void* grad_h0,
                   void* grad_c0);
bool gru_forward(const Problem& pr, const void* gx, const void* h0, const void* w_hh,
                 const void* b_hh, void* y, void* hn, void* saved);
bool gru_backward(const Problem& pr, const void* grad_y, const void* grad_hn, const void* h0,
                  const void* w_hh, const void* y, const void* saved, void* grad_gx,
                  void* grad_gh, void* grad_h0);
// pr.cell picks tanh or relu.
bool rnn_forward(const Problem& pr, const void* gx, const void* h0, const void* w_hh, void* y,
                 void* hn);
bool rnn_backward(const Problem& pr, const void* grad_y, const void* grad_hn, const void* h0,
                  const void* w_hh, const void* y, void* grad_gx, void* grad_h0);

// Selection rule (auto does not pick these kernels yet: see kAutoEnabled). Forward and
// backward are chosen separately (`backward`): both paths write and read the same saved
// layouts, so they mix freely.
//   FASTRNN_PERSISTENT=0     never: kNo.
//   FASTRNN_PERSISTENT=1     kYes whenever the shape fits, else kUnsupported, which the
//                            caller must turn into an error.
//   FASTRNN_PERSISTENT=auto  (or unset) kYes when kAutoEnabled, the shape fits and
//                            B <= kAutoMaxBatch, else kNo.
//   anything else            kBadSetting: the caller reports the variable and its values.
// "Fits": the device supports cooperative launch, and the plan of plan.h (one block per
// SM, at most one block per hidden unit) fits a block's shared memory (opt-in limit) with
// at least one block per SM by the occupancy calculator.
enum class Choice { kNo, kYes, kUnsupported, kBadSetting };
// Not yet a measured threshold. On an H200 (LSTM float32, T=100, forward only; benchmarks/
// results/nvidia-h200-2026-12-04) the persistent path beat the per-step one at H=256,
// B <= 16 (0.77-0.97 ms against 1.52-2.15 ms), lost at H=512, B=64 (4.49 against 2.18 ms)
// and at H=1024, B=8 (2.23 against 1.84 ms), and at H=256, B=64 won in one run and lost in
// the other. The rule will need H as well as B, from repeated runs of every cell and dtype.
constexpr int kAutoMaxBatch = 16;
// Whether `auto` may pick these kernels at all. Off until they have been timed in every
// cell and dtype: until then they run only when asked for (=1).
constexpr bool kAutoEnabled = false;
Choice choose_persistent(Cell cell, Dtype dtype, int B, int H, int device, bool backward);
// Whether the shape fits on `device` (the "fits" above), ignoring FASTRNN_PERSISTENT.
bool persistent_fits(Cell cell, Dtype dtype, int B, int H, int device, bool backward);

}  // namespace persistent
}  // namespace fastrnn
