// Persistent recurrence kernels and their launchers (see persistent.h for the API and the
// shapes, plan.h for the partition, block.h for each block's phases, barrier.h for the grid
// sync). One cooperative launch per direction of a layer; grid = plan.blocks (<= one per
// SM), kBlockThreads threads per block, dynamic shared memory = smem_layout(plan).total.
// The per-step product runs on tensor cores for bf16/fp16 (mma.h) and on FFMA for fp32.
// Kernels exist for every cell policy (csrc/cells) and float, __half, __nv_bfloat16.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "../../cells/all.h"
#include "../dispatch.h"
#include "barrier.h"
#include "block.h"
#include "mma.h"
#include "persistent.h"

namespace fastrnn {
namespace persistent {
namespace {

// Threads of a persistent block (the per-step kernels' blocks are launch_geometry.cuh's).
constexpr int kBlockThreads = 256;
constexpr int kWarps = kBlockThreads / kWarp;
// The storage types the kernels exist for (persistent.h's takes()).
using Types = TypeList<float, __half, __nv_bfloat16>;

// Warp w computes columns w, w + kWarps, ... of the step's product, kColsPerPass columns
// and kMaxRowsPerPass rows at a time: each lane sums its k's, then a butterfly over the
// 32 lanes (fixed order, so the result is deterministic and bitwise what the host
// emulation computes).
template <class Blk>
__device__ __forceinline__ void dot_phase(const Blk& b, const DotJob& j) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int c = warp; c < j.ncol; c += kWarps * kColsPerPass) {
    const int nq = Blk::dot_columns(j, c, kWarps);
    for (int r0 = 0; r0 < j.R; r0 += kMaxRowsPerPass) {
      float acc[kColsPerPass][kMaxRowsPerPass];
#pragma unroll
      for (int q = 0; q < kColsPerPass; ++q) {
#pragma unroll
        for (int r = 0; r < kMaxRowsPerPass; ++r) acc[q][r] = 0.f;
      }
      b.dot_partial(j, c, kWarps, r0, lane, acc);
#pragma unroll
      for (int q = 0; q < kColsPerPass; ++q) {
        if (q >= nq) break;  // uniform over the warp
#pragma unroll
        for (int r = 0; r < kMaxRowsPerPass; ++r) {
#pragma unroll
          for (int off = kWarp / 2; off > 0; off /= 2) {
            acc[q][r] += __shfl_xor_sync(0xffffffffu, acc[q][r], off);
          }
        }
        if (lane == 0) b.dot_store(j, c + q * kWarps, r0, acc[q]);
      }
    }
  }
}

// 16-bit storage: the same product on tensor cores (mma.h), warp q taking jobs q, q + kWarps,
// ... of the tile split; with a K split, the parts are added in a fixed order afterwards.
template <class Blk>
__device__ __forceinline__ void mma_phase(const Blk& b, const DotJob& j) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const MmaJob m = b.mma_job(j, kWarps);
  for (int q = warp; q < m.tiles * m.ksplit; q += kWarps) {
    const auto* x = b.x_s;
    const auto* w = b.w_s;
    int k0, k1;
    b.mma_operands(m, q, &x, &w, &k0, &k1);
    float out[4] = {0.f, 0.f, 0.f, 0.f};
    tile_product(x, w, b.ld, k0, k1, lane, out);
    b.mma_store(j, m, q, lane, out);
  }
  if (m.ksplit > 1) {  // uniform over the block
    __syncthreads();
    b.mma_reduce(j, m, threadIdx.x, kBlockThreads);
  }
}

template <class T>
constexpr bool kTensorCores = sizeof(T) == 2;

template <class Blk, class T>
__device__ __forceinline__ void product(const Blk& b, const DotJob& j) {
  if constexpr (kTensorCores<T>) {
    mma_phase(b, j);
  } else {
    dot_phase(b, j);
  }
}

// Shapes and aliasing: Params in global_memory.h (persistent.h's ForwardTensors).
template <class Cell, class T>
__global__ void __launch_bounds__(kBlockThreads, 1)
    forward_kernel(const Plan p, const Params<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Block<Cell, T> b(p, a, blockIdx.x, smem);
  float gx[Cell::kGates];  // this thread's first gx values of the coming step
  b.load_weights(threadIdx.x, kBlockThreads);
  b.load_gx(0, threadIdx.x, gx);
  for (int s = 0; s < p.steps; ++s) {
    b.stage(s, threadIdx.x, kBlockThreads);
    __syncthreads();  // x_s (and, at s = 0, w_s) complete
    product<Block<Cell, T>, T>(b, b.job(s));
    __syncthreads();  // acc_s complete
    b.gates_forward(s, threadIdx.x, kBlockThreads, gx);
    if (s + 1 < p.steps) {
      b.load_gx(s + 1, threadIdx.x, gx);  // in flight during the barrier
      grid_barrier(a.barrier);            // y rows of step s visible to all
    }
  }
}

// Shapes and aliasing: Params in global_memory.h (persistent.h's BackwardTensors).
template <class Cell, class T>
__global__ void __launch_bounds__(kBlockThreads, 1)
    backward_kernel(const Plan p, const Params<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Blk = Block<Cell, T>;
  const Blk b(p, a, blockIdx.x, smem);
  typename Blk::RowInputs in;  // this thread's first (row, unit) of the coming iteration
  b.load_weights(threadIdx.x, kBlockThreads);
  b.load_inputs_ahead(p.steps - 1, threadIdx.x, in);
  for (int s = p.steps - 1; s >= -1; --s) {
    if (b.rows(s + 1) > 0) {  // uniform over the block
      b.stage(s, threadIdx.x, kBlockThreads);
      __syncthreads();
      product<Blk, T>(b, b.job(s));
      __syncthreads();
    }
    b.gates_backward(s, threadIdx.x, kBlockThreads, in);
    if (s >= 0) {
      b.load_inputs_ahead(s - 1, threadIdx.x, in);  // in flight during the barrier
      grid_barrier(a.barrier);                      // gradient rows of step s visible to all
    }
  }
}

template <class Cell, class T>
void* kernel_for(bool backward) {
  return backward ? reinterpret_cast<void*>(&backward_kernel<Cell, T>)
                  : reinterpret_cast<void*>(&forward_kernel<Cell, T>);
}

// cudaFuncSetAttribute is process-wide: raise each kernel's dynamic shared-memory limit
// once per device, to all the device allows, so that a thread planning another shape never
// lowers it between this thread's query and its launch.
bool raise_smem_limit(const void* kern, int device, int smem_optin) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> raised;
  const std::lock_guard<std::mutex> lock(mutex);
  if (raised.count({kern, device}) != 0) return true;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, kern) != cudaSuccess ||
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           smem_optin - int(attr.sharedSizeBytes)) != cudaSuccess) {
    return false;
  }
  raised.insert({kern, device});
  return true;
}

// The plan for this device, or false when the shape does not fit (see persistent.h).
template <class Cell, class T>
bool device_plan(int B, int H, int T_steps, bool reverse, bool backward, int device, Plan* p) {
  int sms = 0, smem_optin = 0, coop = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) != cudaSuccess) {
    return false;
  }
  if (!coop) return false;
  if (!make_plan(Cell::kGates, B, H, T_steps, reverse, backward, sizeof(T), sizeof(acc_t<T>), sms,
                 size_t(smem_optin), p)) {
    return false;
  }
  const size_t smem = smem_layout(*p, sizeof(T), sizeof(acc_t<T>)).total;
  const void* kern = kernel_for<Cell, T>(backward);
  if (!raise_smem_limit(kern, device, smem_optin)) return false;
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kBlockThreads, smem) !=
      cudaSuccess) {
    return false;
  }
  return per_sm >= 1 && p->blocks <= per_sm * sms;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <class Cell, class T>
bool launch(const Problem& pr, bool backward, Params<T> a) {
  Plan p;
  if (!device_plan<Cell, T>(pr.B, pr.H, pr.T, pr.reverse, backward, pr.device, &p)) return false;
  const T* staged = backward ? (Cell::kSeparateDgh ? a.grad_gh : a.grad_gx) : a.y;
  p.vec_stage = product_depth(p) % int(16 / sizeof(T)) == 0 && aligned16(staged) &&
                (backward || aligned16(a.h0));
  a.sched.batch = pr.sched;
  a.sched.offset = pr.sched + pr.T;
  a.barrier = pr.barrier;
  if (cudaMemsetAsync(pr.barrier, 0, sizeof(unsigned int), pr.stream) != cudaSuccess) return false;
  void* args[] = {&p, &a};
  const size_t smem = smem_layout(p, sizeof(T), sizeof(acc_t<T>)).total;
  const cudaError_t error = cudaLaunchCooperativeKernel(
      kernel_for<Cell, T>(backward), dim3(p.blocks), dim3(kBlockThreads), args, smem, pr.stream);
  if (error == cudaErrorCooperativeLaunchTooLarge) {
    // The blocks cannot all be resident right now (e.g. MPS or a smaller SM partition):
    // not an error, the caller takes the per-step path.
    cudaGetLastError();
    return false;
  }
  return error == cudaSuccess;
}

template <class T>
Params<T> no_params() {
  Params<T> a;
  std::memset(static_cast<void*>(&a), 0, sizeof a);
  return a;
}

template <class T>
const T* in(const void* p) {
  return static_cast<const T*>(p);
}
template <class T>
T* out(const void* p) {  // y and saved are written forward, only read backward
  return static_cast<T*>(const_cast<void*>(p));
}

bool shape_ok(const Problem& pr) { return pr.B > 0 && pr.H > 0 && pr.T > 0; }

// persistent_fits, queried once per (cell, dtype, B, H, device, backward): the queries
// cost a few microseconds (the first one loads the kernel). An error a failed query
// leaves is cleared here, so that no later launch check reports it as its own, and such
// an answer (e.g. out of memory while loading the kernel) is not kept.
template <class Cell>
bool cached_fits(DType dtype, int B, int H, int device, bool backward) {
  using Key = std::tuple<int, int, int, int, int, bool>;
  static std::mutex mutex;
  static std::map<Key, bool> known;
  const Key key{int(Cell::kKind), int(dtype), B, H, device, backward};
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = known.find(key);
    if (found != known.end()) return found->second;
  }
  const bool answer = fits<Cell>(dtype, B, H, device, backward);
  if (!answer && cudaGetLastError() != cudaSuccess) return false;
  const std::lock_guard<std::mutex> lock(mutex);
  known.emplace(key, answer);
  return answer;
}

}  // namespace

template <class Cell>
bool forward(const Problem& pr, const ForwardTensors& t) {
  if (!shape_ok(pr) || (Cell::kUnitParams > 0 && t.unit_params == nullptr)) return false;
  return dispatch(Types{}, pr.dtype, false, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Params<T> a = no_params<T>();
    a.gx = in<T>(t.gx), a.h0 = in<T>(t.h0), a.c0 = in<T>(t.c0), a.w_hh = in<T>(t.w_hh);
    a.b_hh = in<T>(t.b_hh), a.unit_params = in<T>(t.unit_params);
    a.y = out<T>(t.y), a.hn = out<T>(t.hn), a.cn = out<T>(t.cn), a.saved = out<T>(t.saved);
    return launch<Cell, T>(pr, false, a);
  });
}

template <class Cell>
bool backward(const Problem& pr, const BackwardTensors& t) {
  if (!shape_ok(pr) || (Cell::kUnitParams > 0 && t.unit_params == nullptr)) return false;
  return dispatch(Types{}, pr.dtype, false, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Params<T> a = no_params<T>();
    a.grad_y = in<T>(t.grad_y), a.grad_hn = in<T>(t.grad_hn), a.grad_cn = in<T>(t.grad_cn);
    a.h0 = in<T>(t.h0), a.c0 = in<T>(t.c0), a.w_hh = in<T>(t.w_hh);
    a.unit_params = in<T>(t.unit_params);
    a.y = out<T>(t.y), a.saved = out<T>(t.saved);  // only read
    a.grad_gx = out<T>(t.grad_gx), a.grad_gh = out<T>(t.grad_gh);
    a.grad_h0 = out<T>(t.grad_h0), a.grad_c0 = out<T>(t.grad_c0);
    return launch<Cell, T>(pr, true, a);
  });
}

template <class Cell>
bool fits(DType dtype, int B, int H, int device, bool backward) {
  if (B <= 0 || H <= 0) return false;
  return dispatch(Types{}, dtype, false, [&](auto tag) {
    Plan p;
    return device_plan<Cell, typename decltype(tag)::type>(B, H, 1, false, backward, device, &p);
  });
}

template <class Cell>
Choice choose(Setting::Mode setting, DType dtype, int B, int H, int device, bool backward) {
  if (setting == Setting::kNever || setting == Setting::kInvalid) return Choice::kNo;
  if (setting == Setting::kAuto &&
      !(kAutoPersistentCell<Cell> && auto_prefers(dtype, Cell::kGates, B, H))) {
    return Choice::kNo;
  }
  const bool fit = cached_fits<Cell>(dtype, B, H, device, backward);
  if (setting == Setting::kForced) return fit ? Choice::kYes : Choice::kUnsupported;
  return fit ? Choice::kYes : Choice::kNo;
}

#define FASTRNN_PERSISTENT_CELL(Cell, NAME)                                                 \
  template bool forward<Cell>(const Problem&, const ForwardTensors&);                       \
  template bool backward<Cell>(const Problem&, const BackwardTensors&);                     \
  template bool fits<Cell>(DType, int, int, int, bool);                                     \
  template Choice choose<Cell>(Setting::Mode, DType, int, int, int, bool);
FASTRNN_FOR_EACH_CELL(FASTRNN_PERSISTENT_CELL)
#undef FASTRNN_PERSISTENT_CELL

}  // namespace persistent
}  // namespace fastrnn
