// Persistent recurrence kernels and their launchers (see persistent.h for the API,
// plan.h for the partition, block.h for each block's phases, barrier.h for the grid sync).
// One cooperative launch per direction of a layer; grid = plan.blocks (<= one per SM),
// kThreads threads per block, dynamic shared memory = smem_layout(plan).total.
// The per-step product runs on tensor cores for bf16/fp16 (mma.h) and on FFMA for fp32.

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

#include "barrier.h"
#include "block.h"
#include "mma.h"
#include "persistent.h"

namespace fastrnn {
namespace persistent {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;

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
    b.mma_reduce(j, m, threadIdx.x, kThreads);
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

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads, 1) forward_kernel(const Plan p, const Params<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const Block<Cell, T, float> b(p, a, blockIdx.x, smem);
  float gx[Cell::kGates];  // this thread's first gx values of the coming step
  b.load_weights(threadIdx.x, kThreads);
  b.load_gx(0, threadIdx.x, gx);
  for (int s = 0; s < p.steps; ++s) {
    b.stage(s, threadIdx.x, kThreads);
    __syncthreads();  // x_s (and, at s = 0, w_s) complete
    product<Block<Cell, T, float>, T>(b, b.job(s));
    __syncthreads();  // acc_s complete
    b.gates_forward(s, threadIdx.x, kThreads, gx);
    if (s + 1 < p.steps) {
      b.load_gx(s + 1, threadIdx.x, gx);  // in flight during the barrier
      grid_barrier(a.barrier);            // y rows of step s visible to all
    }
  }
}

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads, 1) backward_kernel(const Plan p, const Params<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Blk = Block<Cell, T, float>;
  const Blk b(p, a, blockIdx.x, smem);
  typename Blk::RowInputs in;  // this thread's first (row, unit) of the coming iteration
  b.load_weights(threadIdx.x, kThreads);
  b.load_inputs_ahead(p.steps - 1, threadIdx.x, in);
  for (int s = p.steps - 1; s >= -1; --s) {
    if (b.rows(s + 1) > 0) {  // uniform over the block
      b.stage(s, threadIdx.x, kThreads);
      __syncthreads();
      product<Blk, T>(b, b.job(s));
      __syncthreads();
    }
    b.gates_backward(s, threadIdx.x, kThreads, in);
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
  if (!make_plan(Cell::kGates, B, H, T_steps, reverse, backward, sizeof(T), sizeof(float), sms,
                 size_t(smem_optin), p)) {
    return false;
  }
  const size_t smem = smem_layout(*p, sizeof(T), sizeof(float)).total;
  const void* kern = kernel_for<Cell, T>(backward);
  if (!raise_smem_limit(kern, device, smem_optin)) return false;
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kThreads, smem) !=
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
  const size_t smem = smem_layout(p, sizeof(T), sizeof(float)).total;
  const cudaError_t error = cudaLaunchCooperativeKernel(
      kernel_for<Cell, T>(backward), dim3(p.blocks), dim3(kThreads), args, smem, pr.stream);
  if (error == cudaErrorCooperativeLaunchTooLarge) {
    // The blocks cannot all be resident right now (e.g. MPS or a smaller SM partition):
    // not an error, the caller takes the per-step path.
    cudaGetLastError();
    return false;
  }
  return error == cudaSuccess;
}

// Calls fn(T{}) with T the storage type of `dtype`.
template <class Fn>
bool with_dtype(Dtype dtype, Fn&& fn) {
  switch (dtype) {
    case Dtype::kFloat32: return fn(float{});
    case Dtype::kBFloat16: return fn(__nv_bfloat16{});
    case Dtype::kFloat16: return fn(__half{});
  }
  return false;
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
T* out(void* p) {
  return static_cast<T*>(p);
}

bool shape_ok(const Problem& pr) { return pr.B > 0 && pr.H > 0 && pr.T > 0; }

}  // namespace

bool lstm_forward(const Problem& pr, const void* gx, const void* h0, const void* c0,
                  const void* w_hh, void* y, void* hn, void* cn, void* saved) {
  if (pr.cell != Cell::kLstm || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.gx = in<T>(gx), a.h0 = in<T>(h0), a.c0 = in<T>(c0), a.w_hh = in<T>(w_hh);
    a.y = out<T>(y), a.hn = out<T>(hn), a.cn = out<T>(cn), a.saved = out<T>(saved);
    return launch<LstmPolicy, T>(pr, false, a);
  });
}

bool lstm_backward(const Problem& pr, const void* grad_y, const void* grad_hn,
                   const void* grad_cn, const void* h0, const void* c0, const void* w_hh,
                   const void* y, const void* saved, void* grad_gx, void* grad_h0,
                   void* grad_c0) {
  if (pr.cell != Cell::kLstm || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.grad_y = in<T>(grad_y), a.grad_hn = in<T>(grad_hn), a.grad_cn = in<T>(grad_cn);
    a.h0 = in<T>(h0), a.c0 = in<T>(c0), a.w_hh = in<T>(w_hh);
    a.y = const_cast<T*>(in<T>(y)), a.saved = const_cast<T*>(in<T>(saved));  // only read
    a.grad_gx = out<T>(grad_gx), a.grad_h0 = out<T>(grad_h0), a.grad_c0 = out<T>(grad_c0);
    return launch<LstmPolicy, T>(pr, true, a);
  });
}

bool gru_forward(const Problem& pr, const void* gx, const void* h0, const void* w_hh,
                 const void* b_hh, void* y, void* hn, void* saved) {
  if (pr.cell != Cell::kGru || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.gx = in<T>(gx), a.h0 = in<T>(h0), a.w_hh = in<T>(w_hh), a.b_hh = in<T>(b_hh);
    a.y = out<T>(y), a.hn = out<T>(hn), a.saved = out<T>(saved);
    return launch<GruPolicy, T>(pr, false, a);
  });
}

bool gru_backward(const Problem& pr, const void* grad_y, const void* grad_hn, const void* h0,
                  const void* w_hh, const void* y, const void* saved, void* grad_gx,
                  void* grad_gh, void* grad_h0) {
  if (pr.cell != Cell::kGru || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.grad_y = in<T>(grad_y), a.grad_hn = in<T>(grad_hn), a.h0 = in<T>(h0);
    a.w_hh = in<T>(w_hh);
    a.y = const_cast<T*>(in<T>(y)), a.saved = const_cast<T*>(in<T>(saved));  // only read
    a.grad_gx = out<T>(grad_gx), a.grad_gh = out<T>(grad_gh), a.grad_h0 = out<T>(grad_h0);
    return launch<GruPolicy, T>(pr, true, a);
  });
}

bool rnn_forward(const Problem& pr, const void* gx, const void* h0, const void* w_hh, void* y,
                 void* hn) {
  if ((pr.cell != Cell::kRnnTanh && pr.cell != Cell::kRnnRelu) || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.gx = in<T>(gx), a.h0 = in<T>(h0), a.w_hh = in<T>(w_hh);
    a.y = out<T>(y), a.hn = out<T>(hn);
    return pr.cell == Cell::kRnnRelu ? launch<RnnPolicy<true>, T>(pr, false, a)
                                     : launch<RnnPolicy<false>, T>(pr, false, a);
  });
}

bool rnn_backward(const Problem& pr, const void* grad_y, const void* grad_hn, const void* h0,
                  const void* w_hh, const void* y, void* grad_gx, void* grad_h0) {
  if ((pr.cell != Cell::kRnnTanh && pr.cell != Cell::kRnnRelu) || !shape_ok(pr)) return false;
  return with_dtype(pr.dtype, [&](auto tag) {
    using T = decltype(tag);
    Params<T> a = no_params<T>();
    a.grad_y = in<T>(grad_y), a.grad_hn = in<T>(grad_hn), a.h0 = in<T>(h0);
    a.w_hh = in<T>(w_hh), a.y = const_cast<T*>(in<T>(y));  // y only read
    a.grad_gx = out<T>(grad_gx), a.grad_h0 = out<T>(grad_h0);
    return pr.cell == Cell::kRnnRelu ? launch<RnnPolicy<true>, T>(pr, true, a)
                                     : launch<RnnPolicy<false>, T>(pr, true, a);
  });
}

bool persistent_fits(Cell cell, Dtype dtype, int B, int H, int device, bool backward) {
  if (B <= 0 || H <= 0) return false;
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    Plan p;
    switch (cell) {
      case Cell::kLstm: return device_plan<LstmPolicy, T>(B, H, 1, false, backward, device, &p);
      case Cell::kGru: return device_plan<GruPolicy, T>(B, H, 1, false, backward, device, &p);
      case Cell::kRnnTanh:
        return device_plan<RnnPolicy<false>, T>(B, H, 1, false, backward, device, &p);
      case Cell::kRnnRelu:
        return device_plan<RnnPolicy<true>, T>(B, H, 1, false, backward, device, &p);
    }
    return false;
  });
}

namespace {

// persistent_fits, queried once per (cell, dtype, B, H, device, backward): the queries
// cost a few microseconds (the first one loads the kernel). An error a failed query
// leaves is cleared here, so that no later launch check reports it as its own, and such
// an answer (e.g. out of memory while loading the kernel) is not kept.
bool cached_fits(Cell cell, Dtype dtype, int B, int H, int device, bool backward) {
  using Key = std::tuple<int, int, int, int, int, bool>;
  static std::mutex mutex;
  static std::map<Key, bool> known;
  const Key key{int(cell), int(dtype), B, H, device, backward};
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = known.find(key);
    if (found != known.end()) return found->second;
  }
  const bool fits = persistent_fits(cell, dtype, B, H, device, backward);
  if (!fits && cudaGetLastError() != cudaSuccess) return false;
  const std::lock_guard<std::mutex> lock(mutex);
  known.emplace(key, fits);
  return fits;
}

}  // namespace

Choice choose_persistent(Cell cell, Dtype dtype, int B, int H, int device, bool backward) {
  const char* env = std::getenv("FASTRNN_PERSISTENT");
  const bool is_auto = env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0;
  if (!is_auto && std::strcmp(env, "0") != 0 && std::strcmp(env, "1") != 0) {
    return Choice::kBadSetting;
  }
  if (!is_auto && env[0] == '0') return Choice::kNo;
  if (is_auto && !(kAutoEnabled && B <= kAutoMaxBatch)) return Choice::kNo;
  const bool fits = cached_fits(cell, dtype, B, H, device, backward);
  if (!is_auto) return fits ? Choice::kYes : Choice::kUnsupported;
  return fits ? Choice::kYes : Choice::kNo;
}

}  // namespace persistent
}  // namespace fastrnn
