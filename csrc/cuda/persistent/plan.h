#pragma once
// The partition of a persistent recurrence over blocks and each block's shared memory.
// Plain C++ (host and device): the CUDA launcher and the host emulation share it.
//
// Block b owns hidden units [b*U, min(H, (b+1)*U)) and ALL gates of those units, so the
// gate math needs nothing from other blocks:
//   forward:  rows g*H + u0 .. g*H + u0 + nu of W_hh ([G*H, H]) for every gate g,
//             held as w_s[(g*nu + u) * ld + k]                  (G*nu x H, storage type)
//   backward: columns u0 .. u0 + nu of W_hh, held as w_s[u * ld + k] (nu x G*H)
// (ld = row_stride below).
// Every step a block stages the rows it multiplies (h_{t-1}: [rows, H] forward; the next
// step's recurrent-side gradient: [rows, G*H] backward) from global memory into x_s.

#include <cstddef>
#include <cstdint>

#include "../../cells/policy.h"
#include "../../common/macros.h"

namespace fastrnn {
namespace persistent {

// The cells the persistent kernels run: every per-unit cell with a backward (the
// forward-only leaky cell of a reservoir and the row-wise layer-normalised cells, whose
// rows' reductions would span blocks, take the per-step path).
template <class Cell>
constexpr bool kPersistentCell = !Cell::kForwardOnly && !Cell::kRowWise;
// The cells `auto` may give them: those its rule (auto_prefers) was measured on, torch.nn's
// four. The LSTM variants run there only when FASTRNN_PERSISTENT=1 asks, until measured.
template <class Cell>
constexpr bool kAutoPersistentCell =
    Cell::kKind == CellKind::kLstm || Cell::kKind == CellKind::kGru ||
    Cell::kKind == CellKind::kRnnTanh || Cell::kKind == CellKind::kRnnRelu;

constexpr int kWarp = 32;
constexpr int kMaxRowsPerPass = 16;  // rows one lane accumulates at once (registers)
constexpr int kColsPerPass = 4;      // columns one warp accumulates at once (FFMA product)

struct Plan {
  int B = 0;        // batch (rows of the first step)
  int H = 0;        // hidden size
  int G = 0;        // gates: 4 LSTM (3 with coupled gates), 3 GRU, 1 RNN
  int steps = 0;    // T
  int blocks = 0;   // grid size; every block owns >= 1 unit
  int U = 0;        // units per block (the last block may own fewer)
  bool reverse = false;
  bool backward = false;
  // Stage with 16-byte loads: the product depth K is a multiple of 16 / sizeof(T) and the
  // staged tensors (y and h0 forward, grad_gx / grad_gh backward) are 16-byte aligned.
  // Set by the launcher, which sees the pointers.
  bool vec_stage = false;
};

FASTRNN_HD int first_unit(const Plan& p, int block) { return block * p.U; }
FASTRNN_HD int unit_count(const Plan& p, int block) {
  const int rest = p.H - block * p.U;
  return rest < p.U ? rest : p.U;
}

// Row stride (elements) of x_s and w_s: the product's depth K (H forward, G*H backward)
// rounded up to the tensor-core step 16 (the pad is zero in both), plus 8 so that the rows
// of a 16-bit tile start 16 bytes apart in the banks (conflict-free fragment loads).
FASTRNN_HD int product_depth(const Plan& p) { return p.backward ? p.G * p.H : p.H; }
FASTRNN_HD int row_stride(const Plan& p) { return (product_depth(p) + 15) / 16 * 16 + 8; }
// Columns of the product (G*U forward, U backward) rounded up to the tensor-core tile's 8,
// rows (B) to its 16; the padded rows and columns are zero and never stored.
FASTRNN_HD int padded_columns(const Plan& p) { return ((p.backward ? 1 : p.G) * p.U + 7) / 8 * 8; }
FASTRNN_HD int padded_rows(const Plan& p) { return (p.B + 15) / 16 * 16; }

// Partial 16x8 tiles of a product split along K over warps (at most one per warp).
constexpr int kMaxWarps = 16;
constexpr int kTileElems = 16 * 8;

// Byte offsets of one block's shared-memory regions, each 16-byte aligned:
//   w: the block's W_hh slice, [padded_columns, row_stride] (storage type T)
//   x: the staged rows, [padded_rows, row_stride] (T)
//   acc: [B, G*U] gh (forward) or [B, U] dh through W_hh (backward), accumulation type A
//   carry: [B, U] per-unit state kept across steps (LSTM c / dc, GRU direct dh), type A
//   part: [kMaxWarps, 16, 8] partial tiles of the tensor-core product (A)
struct SmemLayout {
  size_t w = 0, x = 0, acc = 0, carry = 0, part = 0, total = 0;
};

FASTRNN_HD size_t align16(size_t n) { return (n + 15) / 16 * 16; }

FASTRNN_HD SmemLayout smem_layout(const Plan& p, size_t t_bytes, size_t a_bytes) {
  const size_t ld = size_t(row_stride(p));
  SmemLayout l;
  l.w = 0;
  l.x = align16(size_t(padded_columns(p)) * ld * t_bytes);
  l.acc = l.x + align16(size_t(padded_rows(p)) * ld * t_bytes);
  const size_t acc_width = p.backward ? size_t(p.U) : size_t(p.G) * p.U;
  l.carry = l.acc + align16(size_t(p.B) * acc_width * a_bytes);
  l.part = l.carry + align16(size_t(p.B) * p.U * a_bytes);
  l.total = l.part + align16(size_t(kMaxWarps) * kTileElems * a_bytes);
  return l;
}

// The partition for a device with `blocks_max` co-resident blocks (SMs x blocks per SM)
// and `smem_max` bytes of shared memory per block: as many blocks as there are units or
// block slots, each owning U = ceil(H / blocks) units. Returns false (plan unusable) when
// a block's slice and buffers exceed smem_max.
inline bool make_plan(int G, int B, int H, int steps, bool reverse, bool backward,
                      size_t t_bytes, size_t a_bytes, int blocks_max, size_t smem_max,
                      Plan* out) {
  if (G <= 0 || B <= 0 || H <= 0 || steps <= 0 || blocks_max <= 0) return false;
  Plan p;
  p.B = B;
  p.H = H;
  p.G = G;
  p.steps = steps;
  p.reverse = reverse;
  p.backward = backward;
  const int want = H < blocks_max ? H : blocks_max;
  p.U = (H + want - 1) / want;
  p.blocks = (H + p.U - 1) / p.U;
  if (smem_layout(p, t_bytes, a_bytes).total > smem_max) return false;
  *out = p;
  return true;
}

// The packed schedule, by time index t (int32, device or host memory):
// batch[t] rows at time t, starting at packed row offset[t]. Step s visits
// t = reverse ? T-1-s : s; steps outside [0, T) have no rows.
struct Sched {
  const int* batch = nullptr;
  const int* offset = nullptr;
};

FASTRNN_HD int step_rows(const Plan& p, const Sched& sc, int s) {
  if (s < 0 || s >= p.steps) return 0;
  return sc.batch[p.reverse ? p.steps - 1 - s : s];
}
FASTRNN_HD int step_first(const Plan& p, const Sched& sc, int s) {
  return sc.offset[p.reverse ? p.steps - 1 - s : s];
}

}  // namespace persistent
}  // namespace fastrnn
