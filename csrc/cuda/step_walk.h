#pragma once
// The CUDA per-step walk, written once for every cell policy (csrc/cells/policy.h): per
// step one recurrent GEMM through ATen (cuBLAS on the current stream; with projection a
// second one, y = m @ w_hr^T) and one fused kernel over the step's rows (step_units.h);
// weight gradients as GEMMs after the loop. No host syncs.
//
// Arguments and results as every backend's (csrc/common/recurrence.h: checked, contiguous,
// on one device). Device is where the kernels run and the memory comes from:
//   Device(const at::Tensor& like)      the device of like (and its current stream)
//   Device::empty(sizes, options)       memory the kernels and GEMMs write
//   device.forward_step<Cell>(DType, const ForwardStepArgs&)    one step's kernel
//   device.backward_step<Cell>(DType, const BackwardStepArgs&)  (launched and checked)
// The library's is CudaDevice (cuda_backend.cpp); tests/native/cuda_emulation.cpp runs
// the same walk on the CPU with kernels that are host loops and memory that starts as NaN.

#include "../common/recurrence.h"
#include "../common/schedule.h"
#include "step_args.h"
#include "torch_glue.h"

namespace fastrnn {
namespace cuda {

namespace walk_detail {

// gh[0 : rows] = h_prev @ w_t for a step whose h state lives in y (projection): its
// carried rows' h_prev are the previous step's rows of y, the others' rows of h0.
inline void recurrent_gemm_from_y(const at::Tensor& gh, const at::Tensor& y,
                                  const at::Tensor& h0, const Step& step,
                                  const at::Tensor& w_t) {
  const int64_t carried = step.carried, fresh = step.rows - step.carried;
  if (carried > 0) mm_into(rows(gh, 0, carried), rows(y, step.prev_first, carried), w_t);
  if (fresh > 0) mm_into(rows(gh, carried, fresh), rows(h0, carried, fresh), w_t);
}

}  // namespace walk_detail

template <class Device, class Cell>
ForwardResult walk_forward(const ForwardArgs& a) {
  using at::Tensor;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const Device device(a.h0);
  const RecurrenceSizes& sz = a.size;
  const int64_t H = sz.H, P = sz.P;
  const at::TensorOptions options = a.gx.options();
  const DType dtype = dtype_of(a.gx);
  const Schedule schedule(a.batch_sizes, a.reverse);
  const bool proj = Cell::kProjection && a.w_hr.defined();

  // The h state: without projection a [B, P] buffer that the kernel updates; with it, y
  // itself (the projection GEMM writes y's rows, the next step's GEMM reads them) and hn
  // gets each row's last h when its sequence ends.
  Tensor h_state = proj ? device.empty({sz.B, P}, options) : a.h0.clone();
  Tensor carry = Cell::kCellState ? accumulation_copy(a.c0) : Tensor();  // [B, H], in place
  Tensor y = device.empty({sz.N, P}, options);
  Tensor saved = device.empty({a.save ? sz.N : 0, S * H}, options);
  Tensor gh = device.empty({sz.B, G * H}, options);                      // h_prev @ w_hh^T
  Tensor m = proj ? device.empty({sz.B, H}, options) : Tensor();         // h before w_hr
  const Tensor w_hh_t = a.w_hh.t(), w_hr_t = proj ? a.w_hr.t() : Tensor();

  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    if (proj) {
      walk_detail::recurrent_gemm_from_y(gh, y, a.h0, step, w_hh_t);
    } else {
      mm_into(rows(gh, 0, b), rows(h_state, 0, b), w_hh_t);
    }
    // Without projection the kernel writes h to the state and y itself.
    device.template forward_step<Cell>(
        dtype, {a.gx.data_ptr(), gh.data_ptr(), data_or_null(a.b_hh),
                data_or_null(a.unit_params), proj ? m.data_ptr() : h_state.data_ptr(), proj ? nullptr : y.data_ptr(),
                data_or_null(carry), a.save && S > 0 ? saved.data_ptr() : nullptr, H, step});
    if (proj) {
      mm_into(rows(y, step.first, b), rows(m, 0, b), w_hr_t);
      // Rows [next, b) do not go on to the next step: their h is final.
      const int64_t next = s + 1 < schedule.steps() ? schedule.carried_rows(s + 1) : 0;
      if (next < b) rows(h_state, next, b - next).copy_(rows(y, step.first + next, b - next));
    }
  }
  return {y, h_state, Cell::kCellState ? carry.to(a.gx.scalar_type()) : Tensor(), saved};
}

template <class Device, class Cell>
BackwardResult walk_backward(const BackwardArgs& a) {
  using at::Tensor;
  constexpr int G = Cell::kGates;
  const Device device(a.h0);
  const RecurrenceSizes& sz = a.size;
  const int64_t H = sz.H, P = sz.P;
  const at::TensorOptions options = a.y.options();
  const at::ScalarType type = a.y.scalar_type();
  const DType dtype = dtype_of(a.y);
  const Schedule schedule(a.batch_sizes, a.reverse);
  const bool proj = Cell::kProjection && a.w_hr.defined();

  Tensor dh_state = a.grad_hn.clone();  // [B, P]: gradient w.r.t. the h state
  Tensor carry = initial_backward_carry<Cell>(a);  // [B, H], updated in place by the kernel
  Tensor grad_gx = device.empty({sz.N, G * H}, options);
  // The gradient w.r.t. gh = h_prev @ w_hh^T (+ b_hh), which the next step's product and
  // the weight gradients read: a buffer of its own for kSeparateDgh cells, else grad_gx.
  Tensor grad_gh = Cell::kSeparateDgh ? device.empty({sz.N, G * H}, options) : grad_gx;
  // A row-wise cell's per-row gradient w.r.t. unit_params: [B, K*H], accumulation type.
  Tensor params_grad =
      Cell::kRowWise
          ? device.empty({sz.B, Cell::kUnitParams * H}, options.dtype(at::toOpMathType(type)))
                .zero_()
          : Tensor();
  Tensor dh_all = proj ? device.empty({sz.N, P}, options) : Tensor();  // for grad_w_hr
  Tensor m_all = proj ? device.empty({sz.N, H}, options) : Tensor();   // h before w_hr
  Tensor dm = proj ? device.empty({sz.B, H}, options) : Tensor();
  // A packed sequence's h_prev rows, gathered by the kernels for grad_w_hh.
  Tensor h_prev = schedule.dense() ? Tensor() : device.empty({sz.N, P}, options);

  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    if (proj) {  // dh = grad_y + dh_state, then back through h = m @ w_hr^T
      Tensor dh = rows(dh_all, step.first, b);
      at::add_out(dh, rows(dh_state, 0, b), rows(a.grad_y, step.first, b));
      mm_into(rows(dm, 0, b), dh, a.w_hr);
    }
    device.template backward_step<Cell>(
        dtype, {proj ? dm.data_ptr() : dh_state.data_ptr(), proj ? nullptr : a.grad_y.data_ptr(),
                data_or_null(carry), data_or_null(a.saved), data_or_null(a.unit_params),
                a.y.data_ptr(), a.h0.data_ptr(),
                data_or_null(a.c0), grad_gx.data_ptr(),
                Cell::kSeparateDgh ? grad_gh.data_ptr() : nullptr,
                proj ? m_all.data_ptr() : nullptr, data_or_null(h_prev),
                data_or_null(params_grad), H, P, step});
    mm_into(rows(dh_state, 0, b), rows(grad_gh, step.first, b), a.w_hh);
  }

  BackwardResult r;
  r.grad_gx = grad_gx;
  r.params_grad = params_grad;
  // Every row's gradient w.r.t. h0: the cell's h0_grad of the part through the product
  // and the carry its first step left, on whole tensors.
  r.grad_h0 = Cell::template h0_grad<Tensor>(dh_state, carry).to(type);
  if constexpr (Cell::kCellState) r.grad_c0 = carry.to(type);
  r.grad_w_hh = recurrent_weight_grad(grad_gh, a.y, a.h0, h_prev, a.reverse);
  if constexpr (Cell::kProjection) {
    r.grad_w_hr = proj ? at::mm(dh_all.t(), m_all) : at::empty({0}, options);
  }
  if constexpr (Cell::kRecurrentBias) {
    r.grad_b_hh = recurrent_bias_grad<Cell>(a, grad_gh, params_grad);
  }
  return r;
}

}  // namespace cuda
}  // namespace fastrnn
