// Autograd of the single-step op cell_forward (cell_ops.h), in C++: a cell is called once
// per time step, often at sizes where the step's arithmetic takes microseconds, and an
// autograd function written in Python costs more than that on every call and again in
// every backward. The op's backward is cell_backward; the gradients of inputs that need none
// are not formed (the input product's backward GEMM, the state's, and the weights' when no
// weight or bias needs one: a frozen cell). A forward that records a
// graph always saves what backward reads, so callers may pass save=False. In a loop of calls
// with the same weights the steps hand their weight gradients, and their gradients w.r.t. the
// state, on from one to the next (grad_sums_hand_off.h) rather than have autograd add them;
// on the CPU, backward calls the op's kernel itself (cpu_cell_backward_with_sums), which
// adds them where it forms them.

#include <torch/autograd.h>
#include <torch/library.h>

#include <ATen/record_function.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <utility>

#include "cell_ops.h"
#include "common/checks.h"
#include "grad_sums_hand_off.h"

namespace fastrnn {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<Tensor>;

}  // namespace

// The ops' typed handles (schemas in cell_ops.h).
const CellForwardOp& cell_forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastrnn::cell_forward", "")
                             .typed<CellForwardSignature>();
  return op;
}

namespace {

const auto& cell_backward_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastrnn::cell_backward", "")
          .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
              int64_t, const OptionalTensor&, const Tensor&, const OptionalTensor&, const Tensor&,
              const Tensor&, const OptionalTensor&, const Tensor&, const Tensor&, const Tensor&,
              const Tensor&, bool, bool, bool, bool, const OptionalTensor&)>();
  return op;
}

// The forward's arguments, by position: backward returns one gradient for each.
enum Argument { kCell, kX, kH, kC, kWih, kWhh, kBih, kBhh, kSave, kUnitParams, kArguments };
// The output that is the next step's h (forward returns {y, h_new, c_new, saved}).
constexpr int kHNew = 1;

// What backward needs to know of the forward's call besides its tensors, packed into one
// integer with the cell's number (bits 5 and up).
struct StepFlags {
  bool has_bias, x_grad, h_grad, c_grad, weight_grad;
  int64_t pack(int64_t cell) const {
    return cell << 5 | int64_t(has_bias) | int64_t(x_grad) << 1 | int64_t(h_grad) << 2 |
           int64_t(c_grad) << 3 | int64_t(weight_grad) << 4;
  }
  static StepFlags unpack(int64_t packed) {
    const auto bit = [&](int i) { return (packed >> i & 1) != 0; };
    return {bit(0), bit(1), bit(2), bit(3), bit(4)};
  }
  static int64_t cell(int64_t packed) { return packed >> 5; }
};

struct CellStep : torch::autograd::Function<CellStep> {
  // Returns {y, h_new, c_new, saved}. saved is not marked non-differentiable (compiled
  // autograd refuses C++ functions that mark outputs so); its gradient is never read.
  static variable_list forward(AutogradContext* ctx, int64_t cell, const Tensor& x,
                               const Tensor& h, const OptionalTensor& c, const Tensor& w_ih,
                               const Tensor& w_hh, const OptionalTensor& b_ih,
                               const OptionalTensor& b_hh, bool save,
                               const OptionalTensor& unit_params) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, h_new, c_new, saved] = cell_forward_op().call(cell, x, h, c, w_ih, w_hh, b_ih,
                                                           b_hh, save, unit_params);
    ctx->save_for_backward(
        {x, h, c.value_or(Tensor()), w_ih, w_hh, y, saved, unit_params.value_or(Tensor())});
    // Which of the inputs that may go without a gradient want one (needs_input_grad counts
    // only the tensors given, so it cannot name x, h and c by position), the cell and its
    // bias: one entry of saved_data, whose keys are strings made and hashed on every call
    // (six entries took 2.4 us more of an RNN cell's 127 us forward+backward at B=1, H=64).
    const auto needs_grad = [](const OptionalTensor& t) {
      return t.has_value() && t->defined() && t->requires_grad();
    };
    const StepFlags flags{b_ih.has_value() && b_ih->defined(), x.requires_grad(),
                          h.requires_grad(), needs_grad(c),
                          w_ih.requires_grad() || w_hh.requires_grad() || needs_grad(b_ih) ||
                              needs_grad(b_hh) || needs_grad(unit_params)};
    ctx->saved_data["step"] = flags.pack(cell);
    HandOff::make_slot(ctx);
    ctx->set_materialize_grads(false);
    return {y, h_new, c_new, saved};
  }

  // grads: w.r.t. y, h_new, c_new (undefined where unused) and saved (never used).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // Unpacked first: under a non-reentrant checkpoint this recomputes the forward, which
    // must record its graph.
    const auto saved = ctx->get_saved_variables();
    // With create_graph the backward op goes through its own autograd (fastrnn/_cell_ops.py),
    // which refuses a second differentiation, as the layers' ops do; else below autograd.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    const Tensor &x = saved[0], &h = saved[1], &c = saved[2], &w_ih = saved[3], &w_hh = saved[4],
                 &y = saved[5], &rows = saved[6], &unit_params = saved[7];
    // What the step after this one handed off: its gradient w.r.t. h_new (one more term of
    // h_new's) and the weights' sums.
    const HandOff hand_off(ctx, kH, kHNew, {kWih, kWhh, kBih, kBhh});
    const auto left = hand_off.take();
    const Tensor& handed_state = left.state;
    const BackwardResult& sums = left.sums;
    // The op sums the gradients w.r.t. y and h_new: one alone goes as grad_h, none is made.
    // A handed-off term goes as one of the two, where the op adds them in their dtype (not a
    // 16-bit one, which it adds in float: autograd's add rounds), else it is added here.
    Tensor grad_y = grads[0], grad_h_new = grads[1];
    if (handed_state.defined()) {
      if (!grad_h_new.defined()) {
        grad_h_new = handed_state;
      } else if (!grad_y.defined() && !at::isReducedFloatingType(y.scalar_type())) {
        grad_y = std::exchange(grad_h_new, handed_state);
      } else {
        grad_h_new = grad_h_new + handed_state;
      }
    }
    const Tensor grad_h = grad_h_new.defined() ? grad_h_new
                          : grad_y.defined()   ? grad_y
                                               : at::zeros_like(y);
    OptionalTensor grad_c;
    if (c.defined()) grad_c = grads[2].defined() ? grads[2] : at::zeros_like(c);
    const int64_t packed = ctx->saved_data["step"].toInt();
    const auto [has_bias, x_grad, h_grad, c_grad, weight_grad] = StepFlags::unpack(packed);
    const auto optional = [](const Tensor& t) {
      return t.defined() ? OptionalTensor(t) : std::nullopt;
    };
    const bool summed = sums.grad_w_ih.defined();
    const bool direct = takes_cpu_kernel(grads, saved);
    const auto backward_with = [&](const auto& call) {
      return call(StepFlags::cell(packed), grad_h_new.defined() ? optional(grad_y) : std::nullopt,
                  grad_h, grad_c, x, h, optional(c), w_ih, w_hh, y, rows, has_bias, x_grad,
                  h_grad || c_grad, weight_grad, optional(unit_params));
    };
    const auto call_op = [](const auto&... args) { return cell_backward_op().call(args...); };
    const auto call_cpu_kernel = [&](const auto&... args) {
      RECORD_FUNCTION("fastrnn::cell_backward", std::vector<c10::IValue>());
      return cpu_cell_backward_with_sums()(args..., summed ? &sums : nullptr);
    };
    auto [grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_params] =
        direct ? backward_with(call_cpu_kernel) : backward_with(call_op);
    variable_list result(kArguments);
    if (x_grad) result[kX] = grad_x;
    if (c_grad) result[kC] = grad_c0;
    if (weight_grad && unit_params.defined()) result[kUnitParams] = grad_params;
    std::vector<Tensor> weight_grads;
    if (weight_grad) {
      weight_grads = {grad_w_ih, grad_w_hh};
      if (has_bias) weight_grads.insert(weight_grads.end(), {grad_b_ih, grad_b_hh});
    }
    if (summed) {  // the sums no kernel added to: sum + gradient, as autograd would add them
      const std::vector<Tensor> earlier{sums.grad_w_ih, sums.grad_w_hh, sums.grad_b_ih,
                                        sums.grad_b_hh};
      for (size_t i = 0; i < weight_grads.size(); ++i) {
        if (weight_grads[i].is_same(earlier[i])) continue;
        weight_grads[i] = earlier[i].add_(weight_grads[i]);
      }
    }
    const auto passed = hand_off.pass(h_grad ? grad_h0 : Tensor(), weight_grads);
    if (h_grad && !passed.state) result[kH] = grad_h0;
    if (passed.sums) return result;
    const Argument weights[] = {kWih, kWhh, kBih, kBhh};
    for (size_t i = 0; i < weight_grads.size(); ++i) result[weights[i]] = weight_grads[i];
    return result;
  }

 private:
  using HandOff = GradSumsHandOff<CellStep>;

  // Whether backward may call the CPU kernel itself, past the dispatcher, with the sums of
  // the hand-off: plain CPU tensors (no subclass, no functionalization), no dispatch mode,
  // and no graph to record. The profiler still sees the call (RECORD_FUNCTION).
  static bool takes_cpu_kernel(const variable_list& grads, const variable_list& saved) {
    if (at::GradMode::is_enabled() || c10::impl::dispatch_mode_enabled()) return false;
    constexpr auto kCpu = c10::DispatchKeySet(c10::DispatchKey::CPU);
    const auto plain_cpu = [&](const Tensor& t) {
      if (!t.defined()) return true;
      const auto keys = t.key_set() - c10::autograd_dispatch_keyset_with_ADInplaceOrView -
                        c10::autocast_dispatch_keyset;
      return t.layout() == at::kStrided && keys == kCpu;
    };
    return std::all_of(grads.begin(), grads.end(), plain_cpu) &&
           std::all_of(saved.begin(), saved.end(), plain_cpu);
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor> cell_forward_autograd(
    int64_t cell, const Tensor& x, const Tensor& h, const OptionalTensor& c, const Tensor& w_ih,
    const Tensor& w_hh, const OptionalTensor& b_ih, const OptionalTensor& b_hh, bool save,
    const OptionalTensor& unit_params) {
  check_no_forward_ad("cell_forward", x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params);
  const auto wants_grad = [](const OptionalTensor& t) { return t && t->requires_grad(); };
  const bool record = at::GradMode::is_enabled() &&
                      (x.requires_grad() || h.requires_grad() || wants_grad(c) ||
                       w_ih.requires_grad() || w_hh.requires_grad() || wants_grad(b_ih) ||
                       wants_grad(b_hh) || wants_grad(unit_params));
  if (!record) {  // inference: no graph, straight to the backend
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return cell_forward_op().call(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, save, unit_params);
  }
  // A graph is recorded: saved, whatever the caller asked for, since backward reads it.
  auto out = CellStep::apply(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, /*save=*/true, unit_params);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, Autograd, m) {
  m.impl("cell_forward", &cell_forward_autograd);
}

}  // namespace fastrnn
