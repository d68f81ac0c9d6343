// The CPU backend: every op of ops.h on the CPU, for every cell, through one of three walks
// over the cell's policy: the sparse walk (sparse_walk.h) for a recurrent weight in CSR
// form; the fused walk (fused_walk.h) for the cells it was measured to speed up, in float,
// double and bfloat16, without projection, up to a batch size; else the BLAS walk
// (blas_walk.h).
// Weight gradients are GEMMs after the walk. See docs/architecture.md.

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../cell_ops.h"
#include "blas_walk.h"
#include "fused_walk.h"
#include "linear.h"
#include "sparse_walk.h"
#include "step_products.h"
#include "walk_choice.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;

// A cell call's backward (BackwardArgs::x) with its products in one parallel region
// (step_products.h), where takes_step_products takes its sizes, in float or double
// throughout: the BLAS walk runs the step's gate loops alone, reading grad_hn where it
// lies (st.dh is not read), then the region forms grad_x, the products' part of the
// gradient w.r.t. h0 (into dh, a new tensor; grad_hn itself without h0_grad), both
// weights' gradients and the biases', into r (into a.grad_sums, added to them, where
// given). Returns whether it ran (else dh is left).
// Without the copy of grad_hn that the walks update: a step of a 20-step RNNCell loop with
// backward, B1 H64, 2 threads, AMD EPYC, builds alternated over 3 process pairs, median
// 35.1-35.2 -> 33.9-34.2 us. The biases' there rather than by ATen's sum
// and clone: cell_backward, 2 threads, AMD EPYC, alternated in one process, median of 21,
// us, before vs after: RNN B1 H64 22.8 vs 19.0, B32 H256 132 vs 121; LSTM B1 H64 29.2 vs
// 25.4, B8 H128 57.0 vs 52.9, B32 H256 416 vs 408.
template <class Cell, typename T>
bool step_backward(const BackwardArgs& a, const BackwardState<T>& st, const Schedule& schedule,
                   const Tensor& w_hh, FusedSplit split, BackwardResult& r, Tensor& dh) {
  if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
    return false;
  } else {
    const auto dtype = a.y.scalar_type();
    if (!a.x.defined() || split != FusedSplit::kNone || a.w_hr.defined() ||
        a.size.N != a.size.B || a.x.scalar_type() != dtype || a.w_ih.scalar_type() != dtype ||
        a.w_hh.scalar_type() != dtype) {
      return false;
    }
    const int64_t B = a.size.B, H = a.size.H, GH = Cell::kGates * H, I = a.x.size(1);
    const StepGemm<T> input(a.w_ih), recurrent(w_hh);  // [B, G*H] -> [B, I], [B, H]
    if (!takes_step_products(B, GH, I, H) || !input.shares() || !recurrent.shares()) {
      return false;
    }
    BackwardState<T> gates = st;  // reads dh, and writes it only with h0_grad
    gates.dh = const_cast<T*>(a.grad_hn.data_ptr<T>());
    blas_backward<Cell>(gates, schedule, w_hh, a.w_hr, /*h0_grad=*/false);
    dh = a.h0_grad ? at::empty_like(a.grad_hn) : a.grad_hn;
    const auto options = a.y.options();
    if (a.input_grad) r.grad_x = at::empty({B, I}, options);
    // A row-wise cell's b_hh gradient comes from its params_grad (recurrent_bias_grad).
    const bool biases = a.weight_grad && a.has_bias && !Cell::kRowWise;
    const BackwardResult* sums = a.grad_sums;  // added to in place
    const auto result = [&](Tensor BackwardResult::*field, at::IntArrayRef sizes) {
      return sums != nullptr ? sums->*field : walk_buffer(sizes, options);
    };
    if (a.weight_grad) {
      r.grad_w_ih = result(&BackwardResult::grad_w_ih, {GH, I});
      r.grad_w_hh = result(&BackwardResult::grad_w_hh, {GH, H});
    }
    if (biases) {
      r.grad_b_ih = result(&BackwardResult::grad_b_ih, {GH});
      r.grad_b_hh = result(&BackwardResult::grad_b_hh, {GH});
    }
    const Tensor x = a.x.contiguous();
    const auto out = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    step_backward_products<T>({B, GH, I, H, st.grad_gx, st.grad_gh, x.data_ptr<T>(), st.h0,
                               out(r.grad_x), a.h0_grad ? dh.data_ptr<T>() : nullptr,
                               out(r.grad_w_ih), out(r.grad_w_hh), out(r.grad_b_ih),
                               out(r.grad_b_hh), Cell::kRecurrentBias, sums != nullptr},
                              input, recurrent);
    return true;
  }
}

struct CpuBackend {
  // A bfloat16 w_hh with a float state (common/checks.h): see walk_weight.
  static constexpr bool kBfloat16Products = true;
  // The input product (ForwardArgs::x): inside a fused walk whose products multiply in the
  // state's type (fused_forward), else through fastrnn::linear first.
  static constexpr bool kFoldsInputProduct = true;

  // The scope of a single step's backward (cell_ops.h): small products without MKL's threads.
  using StepProducts = SerialBlas;

  // The input product of a single step, x @ w_ih^T + b1 + b2: x [B, I]; w_ih [G*H, I];
  // b1, b2 [G*H] or undefined. StepGemm on raw pointers in float and double (BLAS, or the
  // row-product kernels), into rows that start as the biases' sum: at a cell's sizes
  // at::addmm's dispatch costs more than the product (B1 H64: 4.6 us against about 1).
  // A cell call's whole forward in one parallel region instead (each thread its units'
  // columns of both products for every gate, then their gate loops) was no faster: 2
  // threads, AMD EPYC, float32, in-process alternated, median of 12, us, two regions vs
  // one: no_grad B32 H256 RNN relu 67.2 vs 66.8, tanh 65.4 vs 63.1, LSTM 216 vs 221, GRU 159
  // vs 160, LSTM B8 H512 297 vs 296; a step of a 100-step loop with backward, B32 H256, RNN
  // relu 248 vs 247, tanh 281 vs 277, LSTM 789 vs 850, GRU 639 vs 649.
  static Tensor input_product(const Tensor& x, const Tensor& w_ih, const Tensor& b1,
                              const Tensor& b2) {
    const int64_t rows = x.size(0), width = w_ih.size(0);
    Tensor gx = at::empty({rows, width}, x.options());
    if (rows == 0) return gx;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "input", [&] {
      using T = scalar_t;
      T* out = gx.data_ptr<T>();
      if (b1.defined()) {
        const Tensor c1 = b1.contiguous(), c2 = b2.defined() ? b2.contiguous() : Tensor();
        const T* p1 = c1.data_ptr<T>();
        const T* p2 = c2.defined() ? c2.data_ptr<T>() : nullptr;
        for (int64_t j = 0; j < width; ++j) out[j] = p2 ? T(p1[j] + p2[j]) : p1[j];
        for (int64_t r = 1; r < rows; ++r) std::memcpy(out + r * width, out, width * sizeof(T));
      }
      const Tensor xs = x.contiguous();
      StepGemm<T>(w_ih, /*transposed=*/true)(rows, xs.data_ptr<T>(), out, b1.defined());
    });
    return gx;
  }

  // The input's gradient of a single step, grad_gx @ w_ih (cell_ops.h): grad_gx [B, G*H],
  // w_ih [G*H, I] -> [B, I], through StepGemm (a cell's few rows: row_products.h).
  static Tensor input_grad(const Tensor& grad_gx, const Tensor& w_ih) {
    Tensor grad_x = at::empty({grad_gx.size(0), w_ih.size(1)}, grad_gx.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_gx.scalar_type(), "input_grad",
                                    [&] {
      const Tensor g = grad_gx.contiguous();
      const StepGemm<scalar_t> product(w_ih);  // [B, G*H] -> [B, I]
      product(g.size(0), g.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>());
    });
    return grad_x;
  }

  // w_ih's gradient of a single step, a @ b (cell_ops.h), from walk_buffer.
  static Tensor weight_grad_product(const Tensor& a, const Tensor& b) {
    return product_into_walk_buffer(a, b);
  }

  template <class Cell>
  static ForwardResult forward(ForwardArgs a) {
    const RecurrenceSizes& sz = a.size;
    const Schedule schedule(a.batch_sizes, a.reverse);
    const auto options = a.h0.options();
    const bool sparse = a.w_hh.layout() == at::kSparseCsr;  // the sparse walk's
    const FusedSplit split = fused_walk_split<Cell>(true, sz, a.w_hh, a.w_hr);
    // With x: the input side in the fused walk (gx: the bias, or zeros), else gx formed here.
    const auto dtype = a.h0.scalar_type();
    const bool fold = input_in_walk(a, split);
    if (fold) {
      a.gx = a.b_ih.defined() ? a.b_ih : at::zeros({Cell::kGates * sz.H}, options);
    } else if (a.x.defined()) {
      a.gx = cpu::linear(a.x, a.w_ih, a.b_ih.defined() ? std::optional(a.b_ih) : std::nullopt);
    }
    // [B, P], rows updated as steps visit them: h0 at first, but for the BLAS walk when its
    // first step has every row (without the copy, no_grad, builds alternated: RNNCell B1 H64
    // 14.2 -> 13.9 us, B32 21.9 -> 21.0; an RNN layer at T1 B8 32.8 -> 31.2).
    const bool blas_from_h0 = !sparse && split == FusedSplit::kNone && schedule.steps() > 0 &&
                              schedule.rows(0) == sz.B;
    Tensor h = blas_from_h0 ? at::empty_like(a.h0) : a.h0.clone();
    Tensor carry = Cell::kCellState ? accumulation_copy(a.c0) : Tensor();  // [B, H]
    Tensor y = walk_buffer({sz.N, sz.P}, options);
    Tensor saved = walk_buffer({a.save ? sz.N : 0, Cell::kSaved * sz.H}, options);
    const Tensor w_hh = walk_weight(a.w_hh, a.h0, split);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "forward", [&] {
      using T = scalar_t;
      ForwardState<T> st{a.gx.data_ptr<T>(),
                         a.h0.data_ptr<T>(),
                         sparse || !w_hh.defined() ? nullptr : w_hh.data_ptr<T>(),
                         a.b_hh.defined() ? a.b_hh.data_ptr<T>() : nullptr,
                         a.unit_params.defined() ? a.unit_params.data_ptr<T>() : nullptr,
                         h.data_ptr<T>(),
                         Cell::kCellState ? carry.data_ptr<acc_t<T>>() : nullptr,
                         y.data_ptr<T>(),
                         a.save && Cell::kSaved > 0 ? saved.data_ptr<T>() : nullptr,
                         sz.N, sz.B, sz.H, sz.P};
      if (fold) {
        st.x = a.x.data_ptr<T>();
        st.w_ih = a.w_ih.data_ptr<T>();
        st.I = a.x.size(1);
      }
      if constexpr (kSparseCell<Cell>) {
        if (sparse) {
          Tensor gh = at::empty({sz.B, Cell::kGates * sz.H}, options);  // h_prev @ w_hh^T
          return sparse_forward<Cell>(st, schedule, a.w_hh, gh.data_ptr<T>());
        }
      }
      if constexpr (kFusable<T>) {
        if (split != FusedSplit::kNone) {
          Tensor gh = at::empty({sz.B, Cell::kGates * sz.H}, options);  // h_prev @ w_hh^T
          if constexpr (std::is_same_v<T, float> && kBfloat16Panels) {
            if (!w_hh.defined()) {
              return fused_forward<Cell>(st, a.w_hh.data_ptr<BFloat16>(), schedule,
                                         gh.data_ptr<T>(), split);
            }
          }
          return fused_forward<Cell>(st, st.w_hh, schedule, gh.data_ptr<T>(), split);
        }
      }
      TORCH_INTERNAL_ASSERT(st.x == nullptr, "only the fused walks take the input rows");
      blas_forward<Cell>(st, schedule, w_hh, a.w_hr);
    });
    return {y, h, Cell::kCellState ? carry.to(dtype) : Tensor(), saved};
  }

  template <class Cell>
  static BackwardResult backward(const BackwardArgs& a) {
    const RecurrenceSizes& sz = a.size;
    const Schedule schedule(a.batch_sizes, a.reverse);
    const auto options = a.y.options();
    Tensor dh;  // [B, P]: gradient w.r.t. the h state (a copy of grad_hn the walks update)
    Tensor carry = initial_backward_carry<Cell>(a);  // [B, H]
    Tensor grad_gx = walk_buffer({sz.N, Cell::kGates * sz.H}, options);
    Tensor grad_gh = Cell::kSeparateDgh ? walk_buffer(grad_gx.sizes(), options) : grad_gx;
    // A row-wise cell's per-row gradient w.r.t. unit_params: [B, K*H], accumulation type.
    const auto acc = options.dtype(at::toOpMathType(a.y.scalar_type()));
    Tensor params_grad =
        Cell::kRowWise ? at::zeros({sz.B, Cell::kUnitParams * sz.H}, acc) : Tensor();
    Tensor dh_all;  // [N, P] w.r.t. each row's projected h, with a projection
    const FusedSplit split = fused_walk_split<Cell>(false, sz, a.w_hh, a.w_hr);
    const Tensor w_hh = walk_weight(a.w_hh, a.y, split);
    BackwardResult r;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.y.scalar_type(), "backward", [&] {
      using T = scalar_t;
      BackwardState<T> st{a.grad_y.defined() ? a.grad_y.data_ptr<T>() : nullptr,
                          a.h0.data_ptr<T>(),
                          Cell::kCellState ? a.c0.data_ptr<T>() : nullptr,
                          w_hh.defined() ? w_hh.data_ptr<T>() : nullptr,
                          a.y.data_ptr<T>(),
                          Cell::kSaved > 0 ? a.saved.data_ptr<T>() : nullptr,
                          a.unit_params.defined() ? a.unit_params.data_ptr<T>() : nullptr,
                          nullptr,  // dh: the walks' copy of grad_hn, made below
                          carry.defined() ? carry.data_ptr<acc_t<T>>() : nullptr,
                          grad_gx.data_ptr<T>(),
                          grad_gh.data_ptr<T>(),
                          Cell::kRowWise ? params_grad.data_ptr<acc_t<T>>() : nullptr,
                          sz.N, sz.B, sz.H, sz.P};
      if (step_backward<Cell>(a, st, schedule, w_hh, split, r, dh)) return;
      dh = a.grad_hn.clone();
      st.dh = dh.data_ptr<T>();
      if constexpr (kFusable<T>) {
        if constexpr (std::is_same_v<T, float> && kBfloat16Panels) {
          if (!w_hh.defined()) {
            return fused_backward<Cell>(st, a.w_hh.data_ptr<BFloat16>(), schedule, split);
          }
        }
        if (split != FusedSplit::kNone) return fused_backward<Cell>(st, st.w_hh, schedule, split);
      }
      dh_all = blas_backward<Cell>(st, schedule, w_hh, a.w_hr, a.h0_grad);
    });
    r.grad_gx = grad_gx;
    r.params_grad = params_grad;
    if (a.weight_grad) {
      // For a bfloat16 w_hh, in bfloat16 from operands rounded to it (as torch.nn's under
      // autocast): the gradient comes back in that dtype. The rounded copies of grad_gh and
      // y come from the walks' buffers (walk_state.h).
      const auto w_dtype = a.w_hh.scalar_type();
      const auto rounded = [&](const Tensor& t) {
        if (t.scalar_type() == w_dtype) return t;
        return walk_buffer(t.sizes(), t.options().dtype(w_dtype)).copy_(t);
      };
      if (!r.grad_w_hh.defined()) {
        r.grad_w_hh = recurrent_weight_grad(rounded(grad_gh), rounded(a.y), a.h0.to(w_dtype),
                                            schedule, a.reverse);
      }
      if (!r.grad_b_hh.defined()) {
        r.grad_b_hh = recurrent_bias_grad<Cell>(a, grad_gh, params_grad);
      }
      r.grad_w_hr = at::empty({0}, options);
      if constexpr (Cell::kProjection) {
        if (dh_all.defined()) {
          r.grad_w_hr =
              at::mm(dh_all.t(), hidden_from_saved<Cell>(a.saved, a.unit_params, sz.H));
        }
      }
    }
    // Every row's gradient w.r.t. h0: the cell's h0_grad of the part through the products
    // and the carry its first step left, on whole tensors.
    r.grad_h0 = Cell::template h0_grad<Tensor>(dh, carry).to(a.y.scalar_type());
    if constexpr (Cell::kCellState) r.grad_c0 = carry.to(a.y.scalar_type());
    return r;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  register_ops<CpuBackend>(m);
  register_cell_ops<CpuBackend>(m);
  m.impl("leaky_forward_csr", &op_entry::leaky_forward_csr<CpuBackend>);
}

}  // namespace cpu

bool bfloat16_recurrent_products() { return cpu::kBfloat16Panels; }

CellBackwardWithSums* cpu_cell_backward_with_sums() {
  return &cell_entry::cell_backward<cpu::CpuBackend>;
}

}  // namespace fastrnn
