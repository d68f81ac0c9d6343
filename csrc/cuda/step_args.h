#pragma once
// What one step's kernel of the per-step walk (step_walk.h) reads and writes, for every
// cell: raw pointers, sizes and the step. Plain C++ (no ATen, no CUDA), shared by the walk,
// the kernels (step_kernels.cu) and their host emulation (tests/native/cuda_emulation.cpp).
//
// Every pointer is to contiguous row-major data in the step's storage type, except the
// carry, which stays in the accumulation type between steps (float for half and bfloat16:
// no rounding per step). Sizes: N packed rows, B batch (rows of the walk's longest step),
// H hidden units, P = size of h (H except for a projected cell), G = Cell::kGates,
// S = Cell::kSaved. A step's rows are given by `step` (common/step.h): packed rows
// [first, first + rows) of gx, y, saved and the gradients; rows [0, rows) of the [B, *]
// state buffers. A pointer a cell or an option does not use is null.

#include <cstdint>

#include "../common/step.h"

namespace fastrnn {
namespace cuda {

struct ForwardStepArgs {
  const void* gx;    // [N, G*H] input-side pre-activations (biases but a kRecurrentBias
                     //   cell's b_hh included); read
  const void* gh;    // [>= rows, G*H] h_prev @ w_hh^T for the step's rows; read
  const void* b_hh;  // [G*H] added to gh (kRecurrentBias cells with a bias), or null
  const void* unit_params;  // [K*H] the cell's per-unit constants (K = Cell::kUnitParams),
                            //   or null when K is 0
  void* h;           // [B, H] the h state: row's h_prev read, h written; with projection
                     //   the cell output m before w_hr, written only
  void* y;           // [N, H] rows written; null with projection (y comes from a GEMM)
  void* carry;       // [B, H] accumulation type (kCellState: c); read and replaced
  void* saved;       // [N, S*H] rows written, or null when not saved
  int64_t H;
  Step step;
};

struct BackwardStepArgs {
  const void* dh;      // [>= rows, H] gradient w.r.t. the step's h through the next step's
                       //   product (with projection: w.r.t. m, grad_y already in); read
  const void* grad_y;  // [N, H] added to dh; null with projection
  void* carry;         // [B, H] accumulation type (kBackwardCarry): the later step's carry,
                       //   replaced by this step's
  const void* saved;   // [N, S*H] from forward; read only
  const void* unit_params;  // [K*H] as in ForwardStepArgs, or null
  const void* y;       // [N, P] forward output: the row's h, and h_prev of carried rows
  const void* h0;      // [B, P] h_prev of rows that start at this step
  const void* c0;      // [B, H] prev of rows that start at this step (kPrev kSavedSlot)
  void* grad_gx;       // [N, G*H] rows written: gradient w.r.t. gx
  void* grad_gh;       // [N, G*H] rows written: gradient w.r.t. gh (kSeparateDgh), or null
  void* m;             // [N, H] rows written with the cell output before projection
                       //   (Cell::hidden_from_saved, or a row-wise cell's hidden_row, for
                       //   grad_w_hr), or null
  void* h_prev;        // [N, P] rows written with each row's h_prev (a packed sequence's
                       //   rows for grad_w_hh), or null
  void* params_grad;   // [B, K*H] accumulation type (row-wise cells): each row's gradient
                       //   w.r.t. unit_params, added to; or null
  int64_t H, P;
  Step step;
};

}  // namespace cuda
}  // namespace fastrnn
