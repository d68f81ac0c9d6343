#pragma once
// What one persistent launch reads and writes in global memory (Params), and how a block
// reads what other blocks wrote during the launch (load_cross: from L2, after the grid
// barrier that follows the writes). Host and device: the host emulation runs the same code.

#include <cstdint>
#include <cstring>

#include "../../common/macros.h"
#include "plan.h"

namespace fastrnn {
namespace persistent {

// A value another block wrote before the last grid barrier: read from L2 (.cg), never
// from a stale L1 line. CUDA 13's 16-bit __ldcg is an asm without volatile or a memory
// clobber, which the compiler may move above the barrier; this load cannot move.
template <class T>
FASTRNN_HD T load_cross(const T* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 2) {
    unsigned short bits;
    asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(bits) : "l"(p) : "memory");
    T value;
    memcpy(&value, &bits, sizeof value);
    return value;
  } else {
    return __ldcg(p);
  }
#else
  return *p;
#endif
}

// 16 bytes of any type, for the vectorised staging.
struct alignas(16) Vec16 {
  unsigned int w[4];
};

FASTRNN_HD Vec16 load_cross16(const void* p) {
#if defined(__CUDA_ARCH__)
  const uint4 v = __ldcg(reinterpret_cast<const uint4*>(p));
  return Vec16{{v.x, v.y, v.z, v.w}};
#else
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}

// Global tensors of one direction of one layer, storage type T, all contiguous (the
// launchers fill them from persistent.h's ForwardTensors / BackwardTensors: shapes there).
// N packed rows, GH = G*H, S = Cell::kSaved.
// Forward reads gx [N, GH], h0 [B, H], c0 [B, H] (kCellState), w_hh [GH, H], b_hh [GH]
// (kRecurrentBias, optional); writes y [N, H], hn [B, H], cn [B, H] (kCellState), saved
// [N, S*H] (unless null: no backward will read it).
// Backward reads grad_y [N, H], grad_hn [B, H], grad_cn [B, H] (kCellState), h0, c0, w_hh,
// y, saved; writes grad_gx [N, GH], grad_gh [N, GH] (kSeparateDgh: the gradient w.r.t.
// h_prev @ w_hh^T + b_hh), grad_h0 [B, H], grad_c0 [B, H] (kCellState).
template <class T>
struct Params {
  Sched sched;
  const T *gx, *h0, *c0, *w_hh, *b_hh, *unit_params;
  T *y, *hn, *cn, *saved;
  const T *grad_y, *grad_hn, *grad_cn;
  T *grad_gx, *grad_gh, *grad_h0, *grad_c0;
  unsigned int* barrier;  // one counter, see barrier.h
};

}  // namespace persistent
}  // namespace fastrnn
