#pragma once
// Argument checks shared by every backend's forward and backward: each names the
// argument and the rule it broke. Shapes as in recurrence.h.

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <limits>
#include <ostream>

#include "../cells/policy.h"
#include "recurrence.h"

namespace fastrnn {

// t must have the dtype and device of ref (h0) and the expected shape; `rule` is the shape's
// name in the error message, in pieces (formatted only on failure). With `dtype`, t may
// also have that dtype.
template <class... Rule>
void check_arg_or(const char* op, const at::Tensor& ref, at::ScalarType dtype,
                  const at::Tensor& t, const char* name, at::IntArrayRef expected,
                  const Rule&... rule) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must be ", rule..., " = ", expected,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type() || t.scalar_type() == dtype, op, ": ",
              name, " must have dtype ", ref.scalar_type(), " like h0, got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
              " like h0, got ", t.device());
}

template <class... Rule>
void check_arg(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* name,
               at::IntArrayRef expected, const Rule&... rule) {
  check_arg_or(op, ref, ref.scalar_type(), t, name, expected, rule...);
}

// Whether a recurrence's products multiply in bfloat16: a bfloat16 w_hh with a float32
// state (h0), as under bfloat16 autocast. Backends that can (the CPU's fused walks) round
// the state to bfloat16 as the products' operand and accumulate in float; the others read
// w_hh converted to float. grad_w_hh comes back in w_hh's dtype.
inline bool bfloat16_products(const at::Tensor& h0, const at::Tensor& w_hh) {
  return w_hh.scalar_type() == at::kBFloat16 && h0.scalar_type() == at::kFloat &&
         w_hh.layout() == at::kStrided;
}

// Held by each op's entry point: the ATen ops a kernel calls (its products, sums, copies)
// compute in the dtypes the kernel gives them, never autocast's, which is still on when
// autograd runs a backward op inside an autocast region or when an op is called directly
// under autocast.
struct WithoutAutocast {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// Forward-mode AD (a tangent on any argument, from torch.autograd.forward_ad or
// torch.func.jvp) has no formula in the ops: refused, rather than the tangent dropped.
template <class... Tensors>
void check_no_forward_ad(const char* op, const Tensors&... tensors) {
  const bool tangent = (torch::autograd::isFwGradDefined(tensors) || ...);
  TORCH_CHECK(!tangent, "fastrnn: ", op, ": forward-mode AD (torch.func.jvp, "
              "torch.autograd.forward_ad) is not supported by the recurrence ops");
}

// A width of k blocks of H in messages: "3*H" ("H" for k = 1).
struct BlocksOfH {
  int k;
};
inline std::ostream& operator<<(std::ostream& out, BlocksOfH b) {
  return b.k == 1 ? out << "H" : out << b.k << "*H";
}

// batch_sizes: int64 on the CPU, [T], T > 0, non-increasing, batch_sizes[0] == B;
// h0: [B, P]; w_hh: [G*H, P]; w_hr: [P, H] or none (then P = H); c0: [B, H] for cells with
// a cell state. N = sum(batch_sizes) is the number of packed rows.
template <class Cell>
RecurrenceSizes check_recurrence(const char* op, const at::Tensor& batch_sizes,
                                 const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_hh, const at::Tensor& w_hr) {
  constexpr int G = Cell::kGates;
  constexpr BlocksOfH gates{G};
  TORCH_CHECK(batch_sizes.dim() == 1 && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.device().is_cpu(),
              op, ": batch_sizes must be a 1-D int64 CPU tensor, got ", batch_sizes.dim(),
              "-D ", batch_sizes.scalar_type(), " on ", batch_sizes.device());
  const int64_t T = batch_sizes.size(0);
  TORCH_CHECK(T > 0, op, ": the sequence must have at least one step, got batch_sizes of length 0");
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D [B, P], got ", h0.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % G == 0, op, ": w_hh must be [", gates,
              ", P], got ", w_hh.sizes());
  const int64_t H = w_hh.size(0) / G, P = w_hh.size(1), B = h0.size(0);
  check_arg_or(op, h0, bfloat16_products(h0, w_hh) ? at::kBFloat16 : h0.scalar_type(), w_hh,
               "w_hh", {G * H, h0.size(1)}, "[", gates, ", P] with P = h0.size(1)");
  if (Cell::kCellState) check_arg(op, h0, c0, "c0", {B, H}, "[B, H]");
  if (w_hr.defined()) {
    TORCH_CHECK(Cell::kProjection, op, ": this cell has no projection (w_hr)");
    check_arg(op, h0, w_hr, "w_hr", {P, H}, "[P, H]");
  } else {
    TORCH_CHECK(P == H, op, ": w_hh must be [", gates, ", H]",
                Cell::kProjection ? " without w_hr" : "",
                ", got ", w_hh.sizes());
  }

  const auto sizes = batch_sizes.contiguous();
  const int64_t* b = sizes.data_ptr<int64_t>();
  TORCH_CHECK(b[0] == B, op, ": batch_sizes[0] must equal the batch of h0 (", B, "), got ",
              b[0]);
  int64_t N = 0;
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(b[t] >= 0 && (t == 0 || b[t] <= b[t - 1]), op,
                ": batch_sizes must be non-negative and non-increasing, got ", batch_sizes);
    TORCH_CHECK(N <= std::numeric_limits<int64_t>::max() - b[t], op,
                ": sum(batch_sizes) overflows int64");
    N += b[t];
  }
  return {N, T, B, H, P};
}

// A cell's unit_params: [K*H] (K = Cell::kUnitParams), absent when K is 0; `name`: what
// the op calls them.
template <class Cell>
void check_unit_params(const char* op, const at::Tensor& h0, const at::Tensor& unit_params,
                       int64_t H, const char* name = "unit_params") {
  if constexpr (Cell::kUnitParams > 0) {
    constexpr BlocksOfH params{Cell::kUnitParams};
    TORCH_CHECK(unit_params.defined(), op, ": this cell needs ", name, " [", params, "]");
    check_arg(op, h0, unit_params, name, {Cell::kUnitParams * H}, "[", params, "]");
  } else {
    TORCH_CHECK(!unit_params.defined(), op, ": this cell has no ", name);
  }
}

// The forward op's arguments; returns their sizes. Only the CPU's sparse walk reads a
// sparse w_hh, which only leaky_forward_csr builds (csr_weight, below).
template <class Cell>
RecurrenceSizes check_forward(const char* op, const ForwardArgs& a) {
  const auto sz = check_recurrence<Cell>(op, a.batch_sizes, a.h0, a.c0, a.w_hh, a.w_hr);
  constexpr BlocksOfH gates{Cell::kGates};
  if (a.x.defined()) {
    TORCH_CHECK(a.x.dim() == 2, op, ": x must be 2-D [sum(batch_sizes), I], got ", a.x.sizes());
    const int64_t I = a.x.size(1);
    check_arg(op, a.h0, a.x, "x", {sz.N, I}, "[sum(batch_sizes), I]");
    check_arg(op, a.h0, a.w_ih, "w_ih", {Cell::kGates * sz.H, I}, "[", gates, ", I]");
    if (a.b_ih.defined()) {
      check_arg(op, a.h0, a.b_ih, "bias", {Cell::kGates * sz.H}, "[", gates, "]");
    }
  } else {
    check_arg(op, a.h0, a.gx, "gx", {sz.N, Cell::kGates * sz.H}, "[sum(batch_sizes), ", gates, "]");
  }
  if (a.b_hh.defined()) check_arg(op, a.h0, a.b_hh, "b_hh", {Cell::kGates * sz.H}, "[", gates, "]");
  check_unit_params<Cell>(op, a.h0, a.unit_params, sz.H);
  constexpr bool kCsr = Cell::kKind == CellKind::kLeakyTanh;  // csr_weight's only user
  TORCH_CHECK(a.w_hh.layout() == at::kStrided ||
                  (kCsr && a.w_hh.layout() == at::kSparseCsr && a.w_hh.device().is_cpu()),
              op, ": w_hh must be strided (sparse CSR only for the leaky cell on the CPU), got ",
              a.w_hh.layout(), " on ", a.w_hh.device());
  return sz;
}

// A recurrent weight [rows, P] in CSR form, on the CPU: crow [rows + 1] and col [nnz] int32
// or int64, values [nnz] with h0's dtype; crow starts at 0, never decreases and ends at nnz;
// every column is in [0, P). Returns it as one sparse CSR tensor with int32 indices (no
// copy when they are int32).
inline at::Tensor csr_weight(const char* op, const at::Tensor& h0, const at::Tensor& crow,
                             const at::Tensor& col, const at::Tensor& values, int64_t rows,
                             int64_t P) {
  for (const auto* t : {&crow, &col}) {
    TORCH_CHECK(t->dim() == 1 && (t->scalar_type() == at::kInt || t->scalar_type() == at::kLong)
                    && t->device().is_cpu(),
                op, ": CSR indices must be 1-D int32 or int64 CPU tensors, got ", t->dim(),
                "-D ", t->scalar_type(), " on ", t->device());
  }
  TORCH_CHECK(values.dim() == 1, op, ": CSR values must be 1-D, got ", values.sizes());
  const int64_t nnz = values.size(0);
  check_arg(op, h0, values, "values", {nnz}, "[nnz]");
  TORCH_CHECK(crow.size(0) == rows + 1 && col.size(0) == nnz, op,
              ": CSR crow_indices must be [rows + 1] = [", rows + 1, "] and col_indices [nnz] = [",
              nnz, "], got ", crow.sizes(), " and ", col.sizes());
  TORCH_CHECK(nnz < std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 2 nonzeros");
  const at::Tensor c = crow.to(at::kLong).contiguous();
  const int64_t* cp = c.data_ptr<int64_t>();
  bool ordered = cp[0] == 0 && cp[rows] == nnz;
  for (int64_t r = 0; r < rows && ordered; ++r) ordered = cp[r] <= cp[r + 1];
  TORCH_CHECK(ordered, op, ": CSR crow_indices must start at 0, never decrease and end at nnz");
  if (nnz > 0) {
    const auto [low, high] = at::aminmax(col);  // one pass
    TORCH_CHECK(low.item<int64_t>() >= 0 && high.item<int64_t>() < P, op,
                ": CSR col_indices must lie in [0, ", P, ")");
  }
  // The tensor never leaves the op: torch's notice that sparse CSR is in beta is not shown.
  struct Silent : c10::WarningHandler {
    void process(const c10::Warning&) override {}
  } silent;
  const c10::WarningUtils::WarningHandlerGuard guard(&silent);
  return at::sparse_csr_tensor(crow.to(at::kInt).contiguous(), col.to(at::kInt).contiguous(),
                               values.contiguous(), {rows, P},
                               values.options().layout(at::kSparseCsr));
}

// The backward op's arguments; returns their sizes.
template <class Cell>
RecurrenceSizes check_backward(const char* op, const BackwardArgs& a) {
  const auto sz = check_recurrence<Cell>(op, a.batch_sizes, a.h0, a.c0, a.w_hh, a.w_hr);
  if (a.grad_y.defined() || !a.x.defined()) {  // a cell call's may be missing (cell_ops.h)
    check_arg(op, a.h0, a.grad_y, "grad_y", {sz.N, sz.P}, "[N, P]");
  }
  check_arg(op, a.h0, a.grad_hn, "grad_hn", {sz.B, sz.P}, "[B, P]");
  if (Cell::kCellState) check_arg(op, a.h0, a.grad_cn, "grad_cn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, a.h0, a.y, "y", {sz.N, sz.P}, "[N, P]");
  if (Cell::kSaved > 0) {
    check_arg(op, a.h0, a.saved, "saved", {sz.N, Cell::kSaved * sz.H}, "[N, ",
              BlocksOfH{Cell::kSaved}, "]");
  }
  check_unit_params<Cell>(op, a.h0, a.unit_params, sz.H);
  return sz;
}

}  // namespace fastrnn
