#pragma once
// The CUDA launchers, one per fused per-step kernel: raw pointers, sizes and the stream in,
// the launch's error (cudaGetLastError) out. Implemented in {lstm,gru,rnn}.cu, which include
// only the CUDA runtime and this project's headers; called by the *_ops.cpp glue, which
// maps at::ScalarType to DType, does the GEMMs through ATen and checks every error.
//
// Every pointer is to contiguous row-major data of the step's dtype, except the LSTM's c
// and its gradient, which stay in the accumulation type between steps (float for half and
// bfloat16: no rounding per step). Sizes: N packed rows,
// B batch (= rows of step 0 of a forward walk), H hidden units, P = size of h (P = H
// except for an LSTM with projection). A step's rows are given by `step` (step.h): packed
// rows [first, first + rows) of gx, y, saved and the gradients; rows [0, rows) of the
// [B, *] state buffers.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../common/step.h"

namespace fastrnn {
namespace cuda {

enum class DType { kFloat, kDouble, kHalf, kBFloat16 };

struct LstmForwardStep {
  const void* gx;  // [N, 4H] input-side pre-activations (biases included); read
  const void* gh;  // [>= rows, 4H] h_prev @ w_hh^T for the step's rows; read
  void* c;         // [B, H] cell state (accumulation type); rows [0, rows) read and overwritten
  void* h;         // [B, H] where h = o * tanh(c) goes: the h state, or (projection) m
  void* y;         // [N, H] output rows written, or null (projection: y comes from a GEMM)
  void* saved;     // [N, 5H] rows written as [i|f|g|o|c], or null when not saved
  int64_t H;
  Step step;
};
cudaError_t lstm_forward_step(DType dtype, const LstmForwardStep& args, cudaStream_t stream);

struct LstmBackwardStep {
  const void* dh;      // [>= rows, H] gradient w.r.t. the step's h (projection: w.r.t. m); read
  const void* grad_y;  // [N, H] added to dh, or null (projection: already in dh)
  void* dc;            // [B, H] (accumulation type) rows [0, rows): gradient w.r.t. c,
                       // replaced by the gradient w.r.t. c_prev
  const void* saved;   // [N, 5H] from the forward; read only
  const void* c0;      // [B, H] c_prev of rows that start at this step
  void* grad_gx;       // [N, 4H] rows written: gradient w.r.t. the pre-activations
  void* m;             // [N, H] rows written with o * tanh(c) (for grad_w_hr), or null
  const void* y;       // [N, P] forward output: h_prev of carried rows
  const void* h0;      // [B, P] h_prev of rows that start at this step
  void* h_prev;        // [N, P] rows written with each row's h_prev, or null (no gather)
  int64_t H, P;
  Step step;
};
cudaError_t lstm_backward_step(DType dtype, const LstmBackwardStep& args, cudaStream_t stream);

struct GruForwardStep {
  const void* gx;    // [N, 3H] x @ W_ih^T + b_ih; read
  const void* gh;    // [>= rows, 3H] h_prev @ w_hh^T; read
  const void* b_hh;  // [3H] or null (no bias)
  void* h;           // [B, H] state; rows [0, rows) read (h_prev) and overwritten
  void* y;           // [N, H] rows written
  void* saved;       // [N, 4H] rows written as [r|z|n|h_n], or null when not saved
  int64_t H;
  Step step;
};
cudaError_t gru_forward_step(DType dtype, const GruForwardStep& args, cudaStream_t stream);

struct GruBackwardStep {
  const void* dh;      // [>= rows, H] gradient w.r.t. h through w_hh; read
  void* dh_direct;     // [B, H] rows [0, rows): the direct (z * .) part, read and replaced
  const void* grad_y;  // [N, H] read
  const void* saved;   // [N, 4H] from the forward; read only
  const void* y;       // [N, H] forward output: h_prev of carried rows
  const void* h0;      // [B, H] h_prev of rows that start at this step
  void* grad_gx;       // [N, 3H] rows written: gradient w.r.t. gx
  void* grad_gh;       // [N, 3H] rows written: gradient w.r.t. h_prev @ w_hh^T + b_hh
  void* h_prev;        // [N, H] rows written with each row's h_prev, or null (no gather)
  int64_t H;
  Step step;
};
cudaError_t gru_backward_step(DType dtype, const GruBackwardStep& args, cudaStream_t stream);

struct RnnForwardStep {
  const void* gx;  // [N, H] x @ W_ih^T + b_ih + b_hh; read
  const void* gh;  // [>= rows, H] h_prev @ w_hh^T; read
  void* h;         // [B, H] state; rows [0, rows) overwritten
  void* y;         // [N, H] rows written
  int64_t H;
  bool relu;
  Step step;
};
cudaError_t rnn_forward_step(DType dtype, const RnnForwardStep& args, cudaStream_t stream);

struct RnnBackwardStep {
  const void* dh;      // [>= rows, H] gradient w.r.t. h through w_hh; read
  const void* grad_y;  // [N, H] read
  const void* y;       // [N, H] forward output; read (the activation's output and h_prev)
  const void* h0;      // [B, H] h_prev of rows that start at this step
  void* grad_gx;       // [N, H] rows written: gradient w.r.t. the pre-activation
  void* h_prev;        // [N, H] rows written with each row's h_prev, or null (no gather)
  int64_t H;
  bool relu;
  Step step;
};
cudaError_t rnn_backward_step(DType dtype, const RnnBackwardStep& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastrnn
