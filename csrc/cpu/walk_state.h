#pragma once
// The buffers one CPU walk works on, as raw pointers (allocated in cpu/backend.cpp), and the
// row lookups both walks share. Shapes as in common/recurrence.h; T the storage type.

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <stdlib.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "../common/schedule.h"
#include "units.h"

namespace fastrnn {
namespace cpu {

// Allocates a walk's large buffers (its outputs and gradients, [N, *]), keeping freed ones
// (at most kMaxKept, kMaxKeptBytes in all, the oldest dropped first; none above half of
// that) for the next walk's buffers of about the same size. Allocations above glibc's mmap
// threshold (32 MB at most) come fresh from the kernel each time, and their first touch
// takes a page fault every 4 KB in the walk's threads. Measured on the LSTM's fused walk,
// T100 B64 H512 float32 (`saved` 65 MB; 2 threads, AMD EPYC; a fresh buffer each call
// against reused ones): forward 117 against 82 ms, backward 179 against 140. Smaller ones
// fault as well, where glibc hands back the top of its heap between calls: T100 B32
// I=H=128 forward+backward (`saved` 8.2 MB, grad_gx 6.6 MB), kMinBytes 8 MB against 1 MB:
// 4403 against 36 faults and 23.9 against 17.1 ms a call. kMaxKept holds the buffers of a
// 2-layer bidirectional LSTM's call (16 of them): 8 kept left 1-2 fresh ones a call.
class ReusingAllocator final : public at::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 20, kMaxKept = 32;
  static constexpr size_t kMaxKeptBytes = size_t{512} << 20;
  // glibc's largest mmap threshold: with glibc's malloc an allocation of this size or more
  // outside this pool is always a fresh mapping, every page of which faults at first touch.
  static constexpr size_t kAlwaysFreshBytes = size_t{32} << 20;

  at::DataPtr allocate(size_t bytes) override {
    if (bytes < kMinBytes) return c10::GetCPUAllocator()->allocate(bytes);
    Region* region = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest that fits, within 2x; of equal ones the last freed (its pages warmest).
      for (auto it = kept_.rbegin(); it != kept_.rend(); ++it) {
        if ((*it)->bytes >= bytes && (*it)->bytes <= 2 * bytes &&
            (!region || (*it)->bytes < region->bytes)) {
          region = *it;
        }
      }
      if (region) {
        kept_.erase(std::find(kept_.begin(), kept_.end(), region));
        kept_bytes_ -= region->bytes;
      }
    }
    if (!region) {
      void* data = nullptr;
      if (posix_memalign(&data, 64, bytes) != 0) return c10::GetCPUAllocator()->allocate(bytes);
      region = new Region{data, bytes, this};
    }
    return {region->data, region, &release, at::Device(at::kCPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Region {
    void* data;
    size_t bytes;
    ReusingAllocator* owner;
  };

  static void release(void* ctx) {
    auto* region = static_cast<Region*>(ctx);
    if (region->bytes > kMaxKeptBytes / 2) {  // kept, it would push out all the others
      free(region->data);
      delete region;
      return;
    }
    ReusingAllocator& owner = *region->owner;
    std::lock_guard<std::mutex> lock(owner.mutex_);
    owner.kept_.push_back(region);
    owner.kept_bytes_ += region->bytes;
    while (owner.kept_.size() > kMaxKept || owner.kept_bytes_ > kMaxKeptBytes) {
      Region* oldest = owner.kept_.front();
      owner.kept_.erase(owner.kept_.begin());
      owner.kept_bytes_ -= oldest->bytes;
      free(oldest->data);
      delete oldest;
    }
  }

  std::mutex mutex_;
  std::vector<Region*> kept_;  // oldest first
  size_t kept_bytes_ = 0;
};

// at::empty on the CPU, through ReusingAllocator: an ordinary (resizable) tensor.
inline at::Tensor walk_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  static ReusingAllocator* allocator = new ReusingAllocator;  // never destroyed
  return at::detail::empty_generic(sizes, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

// t itself where it is contiguous, else a contiguous copy in a walk_buffer (an expanded
// gradient, as a sum() loss gives, copied fresh page-faults at first touch).
inline at::Tensor pooled_contiguous(const at::Tensor& t) {
  return t.is_contiguous() ? t : walk_buffer(t.sizes(), t.options()).copy_(t);
}

template <typename T>
struct ForwardState {
  const T* gx;        // [N, G*H]; with x, the input bias [G*H] (or zeros), every row's
  const T* h0;        // [B, P]
  const T* w_hh;      // [G*H, P]; null for a float fused walk's bfloat16 w_hh (backend.cpp)
  const T* b_hh;      // [G*H] (kRecurrentBias with bias) or null
  const T* unit_params;  // [K*H] (K = Cell::kUnitParams > 0) or null
  T* h;               // [B, P] the h state: h0 at first, rows updated as steps visit them
  acc_t<T>* carry;    // [B, H] (kCellState) c0 at first, updated; null otherwise
  T* y;               // [N, P]
  T* saved;           // [N, S*H], or null without save
  int64_t N, B, H, P;
  const T* x = nullptr;     // [N, I] with w_ih [G*H, I] (a fused walk's, ForwardArgs::x):
  const T* w_ih = nullptr;  // the walk adds x @ w_ih^T to its products; null otherwise
  int64_t I = 0;
};

template <typename T>
struct BackwardState {
  const T* grad_y;    // [N, P], or null: a cell call's without one (cell_ops.h)
  const T* h0;        // [B, P]
  const T* c0;        // [B, H] (kCellState) or null
  const T* w_hh;      // [G*H, P]; null for a float fused walk's bfloat16 w_hh (backend.cpp)
  const T* y;         // [N, P]
  const T* saved;     // [N, S*H]
  const T* unit_params;  // [K*H] (K = Cell::kUnitParams > 0) or null
  T* dh;              // [B, P] gradient w.r.t. the h state through the products: grad_hn
                      // at first; the rows of grad_h0 (before Cell::h0_grad) at the end
  acc_t<T>* carry;    // [B, H] (kBackwardCarry): grad_cn or zero at first; null otherwise
  T* grad_gx;         // [N, G*H] written
  T* grad_gh;         // [N, G*H] written (kSeparateDgh); == grad_gx otherwise
  acc_t<T>* params_grad;  // [B, K*H] (row-wise cells) each row's gradient w.r.t. unit_params,
                          // zeros at first, added to; null otherwise
  int64_t N, B, H, P;
};

// Row i of the state step s read: row i of step s-1 in `states` ([N, X], row stride
// `stride`) when that step had the row, else row i of `init` ([B, X], contiguous).
template <typename T>
const T* previous_row(const T* states, int64_t stride, const T* init, const Schedule& schedule,
                      int64_t s, int64_t i, int64_t X) {
  const int64_t row = previous_packed_row(schedule.step(s), i);
  return row >= 0 ? states + row * stride : init + i * X;
}

// Row i's params_grad (row-wise cells), or null.
template <class Cell, typename T>
acc_t<T>* params_grad_row(const BackwardState<T>& st, int64_t i) {
  return Cell::kRowWise ? st.params_grad + i * Cell::kUnitParams * st.H : nullptr;
}

// What backward reads as `prev` for row i of step s (Cell::kPrev): the previous step's h
// (a row of y or h0), or a slot of its saved row (or c0); null for kNone.
template <class Cell, typename T>
const T* backward_prev(const BackwardState<T>& st, const Schedule& schedule, int64_t s,
                       int64_t i) {
  if constexpr (Cell::kPrev == PrevSource::kOutput) {
    return previous_row(st.y, st.P, st.h0, schedule, s, i, st.P);
  } else if constexpr (Cell::kPrev == PrevSource::kSavedSlot) {
    return previous_row(st.saved + Cell::kPrevSlot * st.H, Cell::kSaved * st.H, st.c0, schedule,
                        s, i, st.H);
  } else {
    return nullptr;
  }
}

}  // namespace cpu
}  // namespace fastrnn
