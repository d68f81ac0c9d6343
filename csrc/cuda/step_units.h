#pragma once
// The per-step kernels' work for one (row, column) pair, written once for every cell
// (csrc/cells/policy.h), host and device: step_kernels.cu runs it in CUDA threads,
// tests/native/cuda_emulation.cpp in host loops. The gate math is the cell's; here only
// indexing and conversions. Shapes and aliasing of the arguments: step_args.h.
//
// A unit type is (Cell, storage type T, compile-time options); its `run(args, row, j)`
// does column j < width(args) of the step's row `row` (a row-wise cell's unit: the whole
// row, width 1; the kernels run its run_row with a block per row). dispatch_forward_step /
// dispatch_backward_step pick the unit type for a step's run-time dtype and arguments.

#include <cstdint>
#include <type_traits>

#include "../cells/policy.h"
#include "../cells/row.h"
#include "../common/step.h"
#include "dispatch.h"
#include "step_args.h"

namespace fastrnn {
namespace cuda {

// kSave: write saved. kProject: the cell output goes to args.h as m and a GEMM makes y
// (Cell::kProjection). kBias: add b_hh to gh (Cell::kRecurrentBias).
template <class Cell, class T, bool kSave, bool kProject, bool kBias>
struct ForwardUnit {
  using Args = ForwardStepArgs;
  FASTRNN_HD static int64_t width(const Args& a) { return a.H; }

  // Unit j < H: reads gx, gh (+ b_hh), unit_params, the h state (h_prev) and the carry;
  // writes the h state, y, saved and the carry.
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t j) {
    using A = acc_t<T>;
    constexpr int G = Cell::kGates, S = Cell::kSaved;
    const int64_t H = a.H, packed = a.step.first + row;
    const T* gx = static_cast<const T*>(a.gx) + packed * G * H + j;
    const T* gh = static_cast<const T*>(a.gh) + row * G * H + j;
    constexpr int K = Cell::kUnitParams;
    A x[G], hh[G], saved[S > 0 ? S : 1], params[K > 0 ? K : 1];
    for (int g = 0; g < G; ++g) {
      x[g] = to_acc(gx[g * H]);
      hh[g] = to_acc(gh[g * H]);
      if constexpr (kBias) hh[g] += to_acc(static_cast<const T*>(a.b_hh)[g * H + j]);
    }
    for (int k = 0; k < K; ++k) {
      params[k] = to_acc(static_cast<const T*>(a.unit_params)[k * H + j]);
    }
    T* h = static_cast<T*>(a.h) + row * H + j;
    A carry = A(0);
    if constexpr (Cell::kCellState) carry = static_cast<const A*>(a.carry)[row * H + j];
    const A h_new = Cell::forward(x, hh, kProject ? A(0) : to_acc(*h), carry, saved, params);
    if constexpr (Cell::kCellState) static_cast<A*>(a.carry)[row * H + j] = carry;
    *h = from_acc<T>(h_new);
    if constexpr (!kProject) static_cast<T*>(a.y)[packed * H + j] = from_acc<T>(h_new);
    if constexpr (kSave) {
      T* sv = static_cast<T*>(a.saved) + packed * S * H + j;
      for (int q = 0; q < S; ++q) sv[q * H] = from_acc<T>(saved[q]);
    }
  }
};

// kProject: dh is w.r.t. m (grad_y already in) and m is written (Cell::kProjection).
// kGather: write each row's h_prev (a packed sequence's, for grad_w_hh).
template <class Cell, class T, bool kProject, bool kGather>
struct BackwardUnit {
  using Args = BackwardStepArgs;
  // The size of h: P with projection, else H (= P, known here at compile time).
  FASTRNN_HD static int64_t h_size(const Args& a) { return kProject ? a.P : a.H; }
  // H units, or P when gathering a wider h_prev.
  FASTRNN_HD static int64_t width(const Args& a) {
    return kGather && h_size(a) > a.H ? h_size(a) : a.H;
  }

  // Column j: for j < H the gate gradients (grad_gx, grad_gh, the carry in place, m);
  // with kGather, for j < P the row's h_prev.
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t j) {
    using A = acc_t<T>;
    constexpr int G = Cell::kGates, S = Cell::kSaved;
    constexpr bool kOutputPrev = Cell::kPrev == PrevSource::kOutput;
    const int64_t H = a.H, P = h_size(a), packed = a.step.first + row;
    const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from h0 / c0
    const T* y = static_cast<const T*>(a.y);
    const T* saved_all = static_cast<const T*>(a.saved);
    // The row's h_prev as stored: the previous step's row of y, or the row of h0. Columns
    // j >= P exist only when gathering (width P > H does not hold: then j < H <= P).
    T h_prev{};
    if constexpr (kOutputPrev || kGather) {
      if (!kGather || j < P) {
        h_prev = (prev >= 0 ? y + prev * P : static_cast<const T*>(a.h0) + row * P)[j];
      }
    }
    if (j < H) {
      A dh = to_acc(static_cast<const T*>(a.dh)[row * H + j]);
      if constexpr (!kProject) dh += to_acc(static_cast<const T*>(a.grad_y)[packed * H + j]);
      constexpr int K = Cell::kUnitParams;
      A carry = A(0), saved[S > 0 ? S : 1], prev_value = A(0), params[K > 0 ? K : 1];
      if constexpr (Cell::kBackwardCarry) carry = static_cast<const A*>(a.carry)[row * H + j];
      for (int q = 0; q < S; ++q) saved[q] = to_acc(saved_all[packed * S * H + q * H + j]);
      for (int k = 0; k < K; ++k) {
        params[k] = to_acc(static_cast<const T*>(a.unit_params)[k * H + j]);
      }
      if constexpr (kOutputPrev) {
        prev_value = to_acc(h_prev);
      } else if constexpr (Cell::kPrev == PrevSource::kSavedSlot) {
        prev_value = to_acc(prev >= 0 ? saved_all[prev * S * H + Cell::kPrevSlot * H + j]
                                      : static_cast<const T*>(a.c0)[row * H + j]);
      }
      // The row's own h (y; none with projection, whose y is not the cell's output).
      const A h = kProject ? A(0) : to_acc(y[packed * H + j]);
      A dx[G], dgh[G];
      Cell::backward(dh, carry, saved, h, prev_value, params, dx, dgh);
      if constexpr (Cell::kBackwardCarry) static_cast<A*>(a.carry)[row * H + j] = carry;
      T* grad_gx = static_cast<T*>(a.grad_gx) + packed * G * H + j;
      for (int g = 0; g < G; ++g) grad_gx[g * H] = from_acc<T>(dx[g]);
      if constexpr (Cell::kSeparateDgh) {
        T* grad_gh = static_cast<T*>(a.grad_gh) + packed * G * H + j;
        for (int g = 0; g < G; ++g) grad_gh[g * H] = from_acc<T>(dgh[g]);
      }
      if constexpr (kProject) {
        static_cast<T*>(a.m)[packed * H + j] = from_acc<T>(Cell::hidden_from_saved(saved));
      }
    }
    if constexpr (kGather) {
      if (j < P) static_cast<T*>(a.h_prev)[packed * P + j] = h_prev;
    }
  }
};

// cells/row.h's row context for one thread walking a whole row, converting as the kernels
// do: the row units' `run` (the host emulation's).
struct ThreadRow : SerialRow {
  template <class A, class T>
  FASTRNN_HD static A in(T v) {
    return to_acc(v);
  }
  template <class T, class A>
  FASTRNN_HD static T out(A v) {
    return from_acc<T>(v);
  }
};

// A row-wise cell's step (cells/row.h), a row at a time: run_row(ctx, a, row) does the
// step's row `row` with the row context ctx (the row kernel's: a block per row), and
// run(a, row, 0) the same in one thread (width 1). Options as ForwardUnit's.
template <class Cell, class T, bool kSave, bool kProject, bool kBias>
struct RowForwardUnit {
  using Args = ForwardStepArgs;
  FASTRNN_HD static int64_t width(const Args&) { return 1; }

  template <class Ctx>
  FASTRNN_HD static void run_row(const Ctx& ctx, const Args& a, int64_t row) {
    using A = acc_t<T>;
    constexpr int G = Cell::kGates, S = Cell::kSaved;
    const int64_t H = a.H, packed = a.step.first + row;
    T* h = static_cast<T*>(a.h) + row * H;
    Cell::template forward_row<A, kSave, kBias>(
        ctx, RowForward<T, A>{static_cast<const T*>(a.gx) + packed * G * H,
                              static_cast<const T*>(a.gh) + row * G * H,
                              static_cast<const T*>(a.b_hh),
                              static_cast<const T*>(a.unit_params), h,
                              Cell::kCellState ? static_cast<A*>(a.carry) + row * H : nullptr,
                              kSave ? static_cast<T*>(a.saved) + packed * S * H : nullptr, h,
                              kProject ? h : static_cast<T*>(a.y) + packed * H, H});
  }
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t /*j*/) {
    run_row(ThreadRow{}, a, row);
  }
};

// Options as BackwardUnit's; the row's m (Cell::hidden_row) and h_prev are written after its
// gradients.
template <class Cell, class T, bool kProject, bool kGather>
struct RowBackwardUnit {
  using Args = BackwardStepArgs;
  FASTRNN_HD static int64_t width(const Args&) { return 1; }

  template <class Ctx>
  FASTRNN_HD static void run_row(const Ctx& ctx, const Args& a, int64_t row) {
    using A = acc_t<T>;
    constexpr int G = Cell::kGates, S = Cell::kSaved;
    const int64_t H = a.H, P = kProject ? a.P : a.H, packed = a.step.first + row;
    const int64_t prev = previous_packed_row(a.step, row);  // -1: starts from h0 / c0
    const T* y = static_cast<const T*>(a.y);
    const T* saved = static_cast<const T*>(a.saved);
    const T* h_prev = prev >= 0 ? y + prev * P : static_cast<const T*>(a.h0) + row * P;
    const T* prev_value = nullptr;  // what Cell::kPrev names
    if constexpr (Cell::kPrev == PrevSource::kOutput) {
      prev_value = h_prev;
    } else if constexpr (Cell::kPrev == PrevSource::kSavedSlot) {
      prev_value = prev >= 0 ? saved + prev * S * H + Cell::kPrevSlot * H
                             : static_cast<const T*>(a.c0) + row * H;
    }
    Cell::template backward_row<A, !kProject>(
        ctx, RowBackward<T, A>{static_cast<const T*>(a.dh) + row * H,
                               kProject ? nullptr : static_cast<const T*>(a.grad_y) + packed * H,
                               static_cast<A*>(a.carry) + row * H, saved + packed * S * H,
                               static_cast<const T*>(a.unit_params), prev_value,
                               static_cast<T*>(a.grad_gx) + packed * G * H,
                               static_cast<T*>(a.grad_gh) + packed * G * H,
                               static_cast<A*>(a.params_grad) + row * Cell::kUnitParams * H,
                               H});
    if constexpr (kProject) {
      Cell::template hidden_row<A>(ctx, saved + packed * S * H,
                                   static_cast<const T*>(a.unit_params),
                                   static_cast<T*>(a.m) + packed * H, H);
    }
    if constexpr (kGather) {
      ctx.for_units(P, [&](int64_t j) { static_cast<T*>(a.h_prev)[packed * P + j] = h_prev[j]; });
    }
  }
  FASTRNN_HD static void run(const Args& a, int64_t row, int64_t /*j*/) {
    run_row(ThreadRow{}, a, row);
  }
};

// The storage types the per-step kernels exist for.
using StepTypes = TypeList<float, double, __half, __nv_bfloat16>;

// run(Unit{}) for the forward unit of dtype and a's options (saved given, y not given:
// projection, b_hh given); `otherwise` for a dtype without kernels.
template <class Cell, class R, class Run>
R dispatch_forward_step(DType dtype, const ForwardStepArgs& a, R otherwise, Run&& run) {
  return dispatch(StepTypes{}, dtype, otherwise, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flag<(Cell::kSaved > 0)>(a.saved != nullptr, [&](auto save) {
      return with_flag<Cell::kProjection>(a.y == nullptr, [&](auto project) {
        return with_flag<Cell::kRecurrentBias>(a.b_hh != nullptr, [&](auto bias) {
          constexpr bool kSave = decltype(save)::value, kProject = decltype(project)::value,
                         kBias = decltype(bias)::value;
          return run(std::conditional_t<Cell::kRowWise,
                                        RowForwardUnit<Cell, T, kSave, kProject, kBias>,
                                        ForwardUnit<Cell, T, kSave, kProject, kBias>>{});
        });
      });
    });
  });
}

// run(Unit{}) for the backward unit of dtype and a's options (m given: projection,
// h_prev given: gather); `otherwise` for a dtype without kernels.
template <class Cell, class R, class Run>
R dispatch_backward_step(DType dtype, const BackwardStepArgs& a, R otherwise, Run&& run) {
  return dispatch(StepTypes{}, dtype, otherwise, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return with_flag<Cell::kProjection>(a.m != nullptr, [&](auto project) {
      return with_flag<true>(a.h_prev != nullptr, [&](auto gather) {
        constexpr bool kProject = decltype(project)::value, kGather = decltype(gather)::value;
        return run(std::conditional_t<Cell::kRowWise, RowBackwardUnit<Cell, T, kProject, kGather>,
                                      BackwardUnit<Cell, T, kProject, kGather>>{});
      });
    });
  });
}

}  // namespace cuda
}  // namespace fastrnn
