#pragma once
// The hand-off of a loop's gradients from step to step. A training loop over a cell
// (h = cell(x[t], h) for t < T, then backward) records T nodes with the same weights, and
// autograd adds their T gradients w.r.t. each weight and bias as they come back, from the
// last step to the first: per step an op that adds a [G*H, I] and a [G*H, H] tensor,
// reading three times what it writes. Instead a step whose previous step (the node its h
// came from) has the same weights, and will run in the same backward, leaves that node its
// gradients, summed with those of the steps after it, and returns none for them; the
// previous step forms its own gradients onto those sums (BackwardArgs::grad_sums) as
// autograd would have added them, in the same order, with the same bits. The first step
// returns the sums, once: a hook on a weight sees what it saw before.
// 100-step cell loops with backward, 2 threads, AMD EPYC (Zen 4), float32, hand-off on vs
// off alternated in one process, median of 15-21, ms: B1 H64 RNN tanh 3.29 vs 2.69, LSTM
// 4.53 vs 3.69, GRU 4.04 vs 3.20; B32 H256 RNN relu 19.1 vs 17.3, RNN tanh 18.8 vs 17.4,
// LSTM 58.7 vs 55.9, GRU 46.0 vs 43.2.
// Likewise a step's gradient w.r.t. its h, where h is the previous step's h_new: a loop that
// also keeps each h (for its output, or a loss on it) gives h_new two gradients, and autograd
// adds them in a new tensor, the first (the output's, a view of a larger gradient) being
// no tensor it may add into. The step leaves it with the previous step instead, whose op adds
// it to the other where it reads them (the same two terms: the same bits). Not where the
// previous node's inputs are watched: a hook on h_new or on that node, retain_grad, or a
// backward that captures h_new's gradient (torch.autograd.grad w.r.t. h_new).
// Passing on, instead of the weights' sums, the operands of up to 3 steps' weight gradients,
// for the 4th to form them all in one pass with the sums' blocks held in registers (the same
// bits; the outer products alone, one thread, [256, 256] at K = 32: 94 GFLOP/s a step, 106
// four at a time), was no faster in the loops above at B32 H256: time against one step at a
// time, two runs of 28 alternated in one process, RNN relu 0.97 and 1.03, tanh 0.93 and
// 1.02, GRU 1.02 and 1.01, LSTM 1.04 and 1.00.
// Nor are the weights' gradients formed on the second core while the first runs the engine's
// serial part (its bookkeeping between nodes, the loop's other ops), when the second idles:
// that takes a thread that outlives a parallel region, outside OpenMP's team, and libgomp's
// own worker spins for about 8 ms after each region (2 threads, AMD EPYC: its CPU time in
// the 200 ms after one cell call, 7.4-8.1 ms), so the two would share a core in every loop.
//
// Only between nodes the engine runs itself (not compiled autograd's), in a backward that
// records no graph (no create_graph); a node that is left gradients always takes them,
// whatever path its own backward takes. Not on the GPU, where the tensors would pass between
// streams unordered.

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/anomaly_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <vector>

#include "common/recurrence.h"

namespace fastrnn {

// The node of Step (a torch::autograd::Function) that ctx belongs to while the engine runs
// it. Step's forward numbers its arguments: h the state the previous step returned, weights
// those whose gradients are handed off, in BackwardResult's order (w_ih, w_hh, b_ih, b_hh);
// h_new is the number of Step's output that is the next step's h.
template <class Step>
class GradSumsHandOff {
 public:
  using Node = torch::autograd::CppNode<Step>;

  // Called by Step's forward: the slot the next step's gradients go in, made now so that a
  // backward never changes the set of another node's saved_data.
  static void make_slot(torch::autograd::AutogradContext* ctx) { ctx->saved_data[kSlot]; }

  GradSumsHandOff(torch::autograd::AutogradContext* ctx, int h, int h_new,
                  std::array<int, 4> weights)
      : ctx_(ctx), h_(h), h_new_(h_new), weights_(weights) {
    const auto current = torch::autograd::get_current_node();
    auto* node = dynamic_cast<Node*>(current.get());
    if (node != nullptr && &node->ctx_ == ctx) node_ = node;
  }

  // What the step after this one left for it: its gradient w.r.t. this step's h_new, and
  // the weights' sums; each undefined where it left none.
  struct Left {
    at::Tensor state;
    BackwardResult sums;
  };

  // What the step after this one left for it in this backward. What another backward left
  // (one running in another thread on the same graph, or the one a hook of this node runs
  // within it) stays for that backward.
  Left take() const {
    Left taken;
    const auto slot = ctx_->saved_data.find(kSlot);
    if (slot == ctx_->saved_data.end()) return taken;
    const std::lock_guard<std::mutex> lock(mutex());
    if (!slot->second.isTuple()) return taken;
    const auto& left = slot->second.toTupleRef().elements();
    if (left[0].toInt() != torch::autograd::get_current_graph_task_id()) return taken;
    if (left[1].isTensor()) taken.state = left[1].toTensor();
    if (left.size() > 2) {
      taken.sums.grad_w_ih = left[2].toTensor();
      taken.sums.grad_w_hh = left[3].toTensor();
    }
    if (left.size() > 4) {
      taken.sums.grad_b_ih = left[4].toTensor();
      taken.sums.grad_b_hh = left[5].toTensor();
    }
    slot->second = c10::IValue();
    return taken;
  }

  // Which of pass's gradients it left with the previous step.
  struct Passed {
    bool state = false, sums = false;
  };

  // Leaves with the previous step (the node h came from, when it is a Step's that runs in
  // this backward) state, this step's gradient w.r.t. h (undefined: none), where h is its
  // h_new and nothing watches that node's inputs (see above); and sums (this step's
  // gradients w.r.t. weights, added to the later steps'; empty: none), where it has the
  // same weights. Each only where the previous step would receive it as it is (same shape
  // and dtype, contiguous, on the CPU: no stream to order it on). Nothing where either node
  // has a hook on what it returns, which must see that step's gradients alone, nor in
  // anomaly mode, which must name the step that made a NaN.
  Passed pass(const at::Tensor& state, const std::vector<at::Tensor>& sums) const {
    if (node_ == nullptr || at::GradMode::is_enabled() ||
        torch::autograd::AnomalyMode::is_enabled() || !node_->post_hooks().empty()) {
      return {};
    }
    const torch::autograd::Edge& h = edge(*node_, h_);
    auto* previous = dynamic_cast<Node*>(h.function.get());
    if (previous == nullptr || !previous->post_hooks().empty() || !will_run(previous)) {
      return {};
    }
    Passed passed;
    passed.state = state.defined() && h.input_nr == static_cast<uint32_t>(h_new_) &&
                   unwatched(previous) && receives_as_is(h, state);
    passed.sums = !sums.empty() && same_weights(*previous, sums);
    if (!passed.state && !passed.sums) return {};
    const auto slot = previous->ctx_.saved_data.find(kSlot);
    if (slot == previous->ctx_.saved_data.end()) return {};
    std::vector<c10::IValue> left{torch::autograd::get_current_graph_task_id(),
                                  passed.state ? c10::IValue(state) : c10::IValue()};
    if (passed.sums) left.insert(left.end(), sums.begin(), sums.end());
    const std::lock_guard<std::mutex> lock(mutex());
    if (!slot->second.isNone()) return {};  // another step (or backward) left it gradients
    slot->second = c10::ivalue::Tuple::create(std::move(left));
    return passed;
  }

 private:
  static constexpr const char* kSlot = "grad_sums";

  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }

  // The edge of forward argument `argument` (a tensor given): the arguments that are
  // tensors given have an edge each, in order.
  static const torch::autograd::Edge& edge(const Node& node, int argument) {
    const auto& given = node.is_variable_input_;
    return node.next_edge(std::count(given.begin(), given.begin() + argument, true));
  }

  static bool will_run(torch::autograd::Node* node) {
    const auto* exec_info = torch::autograd::get_current_graph_task_exec_info();
    if (exec_info == nullptr || exec_info->empty()) return true;  // every node runs
    const auto found = exec_info->find(node);
    return found != exec_info->end() && found->second.needed_;
  }

  // Whether nothing reads node's inputs but node itself: no hook on them or on node before
  // it runs, no retain_grad, and no capture of them by this backward.
  static bool unwatched(Node* node) {
    if (!node->pre_hooks().empty() || !node->tensor_pre_hooks().empty() ||
        !node->retains_grad_hooks().empty()) {
      return false;
    }
    const auto* exec_info = torch::autograd::get_current_graph_task_exec_info();
    if (exec_info == nullptr || exec_info->empty()) return true;
    const auto found = exec_info->find(node);
    return found == exec_info->end() || !found->second.captures_;
  }

  // Whether previous has the same weights as this step's node, and would receive sums (in
  // BackwardResult's order) as they are.
  bool same_weights(const Node& previous, const std::vector<at::Tensor>& sums) const {
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (node_->is_variable_input_[weights_[i]] != previous.is_variable_input_[weights_[i]]) {
        return false;
      }
      if (!node_->is_variable_input_[weights_[i]]) continue;
      const auto &mine = edge(*node_, weights_[i]), &theirs = edge(previous, weights_[i]);
      if (!mine.is_valid() || mine != theirs || i >= sums.size() ||
          !receives_as_is(mine, sums[i])) {
        return false;
      }
    }
    return true;
  }

  // Whether the engine passes grad on to e's node unchanged (no cast, no reduction).
  static bool receives_as_is(const torch::autograd::Edge& e, const at::Tensor& grad) {
    const auto& input = e.function->input_metadata(e.input_nr);
    return grad.defined() && grad.is_contiguous() && grad.device().is_cpu() &&
           !input.is_tensor_subclass() && input.dtype() == grad.dtype() &&
           input.device() == grad.device() && input.is_same_shape(grad);
  }

  torch::autograd::AutogradContext* ctx_;
  int h_, h_new_;
  std::array<int, 4> weights_;
  Node* node_ = nullptr;  // null where the engine does not run this node itself
};

}  // namespace fastrnn
