// The clockwork RNN's ops on CUDA (schemas in ops.h, checks in common/clockwork.h): each
// module's input product for its active steps' rows (common/clockwork_inputs.h), then per
// step one GEMM per active module through ATen (cuBLAS on the current stream), over the
// allowed blocks of w_hh, into the module's columns of a [B, H] buffer that starts as its
// gx rows, then one kernel over the step's rows (clockwork_units.h, the cell's policy).
// The same schedule as the CPU walk (cpu/clockwork_walk.h). No host syncs.

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../common/clockwork_inputs.h"
#include "step_kernels.h"
#include "stream.h"
#include "torch_glue.h"

namespace fastrnn {
namespace cuda {
namespace {

using at::Tensor;

// x: [N, I]; w_ih: [H, I]; bias: [H] or none; h0: [B, H]; w_hh: [H, H]. Returns y [N, H],
// hn [B, H].
std::tuple<Tensor, Tensor> forward_op(const Tensor& x, const Tensor& w_ih,
                                      const std::optional<Tensor>& bias,
                                      const Tensor& batch_sizes, const Tensor& h0,
                                      const Tensor& w_hh, c10::IntArrayRef periods) {
  const c10::DeviceGuard guard(h0.device());
  const WithoutAutocast no_autocast;
  const Tensor b = bias.value_or(Tensor());
  const ClockworkArgs args = check_clockwork_forward("clockwork_forward", x, w_ih, b,
                                                     batch_sizes, h0, w_hh, periods);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const Schedule schedule(batch_sizes, false);
  const std::vector<Tensor> gx = clockwork_input_products(
      clockwork_module_inputs(x, clockwork_active_rows(schedule, m, x.device())), w_ih, b, m);
  const DType dtype = dtype_of(h0);
  const cudaStream_t stream = current_stream(h0.device());
  const Tensor w = w_hh.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);  // [B, H], active units replaced
  Tensor y = at::empty({sz.N, sz.H}, h0.options());
  Tensor pre = at::empty({sz.B, sz.H}, h0.options());  // active modules: gx + products
  std::vector<int64_t> next(m.count(), 0);  // module i's next row of gx[i]
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    for (int64_t i = 0; i < m.count(); ++i) {
      if (!m.active(i, s)) continue;
      const int64_t u0 = i * m.k;
      Tensor out = rows(pre, 0, b).narrow(1, u0, m.k);  // [b, k]
      at::addmm_out(out, rows(gx[i], next[i], b), rows(h, 0, b).narrow(1, u0, sz.H - u0),
                    clockwork_block(w, m, i).t());
      next[i] += b;
    }
    check_launch(launch_clockwork_forward_step(
                     dtype, {pre.data_ptr(), h.data_ptr(), y.data_ptr(), nullptr, nullptr,
                             nullptr, m.active_mask(s), sz.H, m.k, step}, stream),
                 "clockwork forward step");
  }
  return {y, h};
}

// Returns grad_x [N, I] ([0, I] unless input_grad), grad_w_ih [H, I], grad_bias [H],
// grad_h0 [B, H], grad_w_hh [H, H] (zero outside the allowed blocks; the weights' summed in
// float for the 16-bit types).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_op(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& x, const Tensor& w_ih,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& w_hh, const Tensor& y,
    c10::IntArrayRef periods, bool input_grad) {
  const c10::DeviceGuard guard(h0.device());
  const WithoutAutocast no_autocast;
  const ClockworkArgs args = check_clockwork_backward("clockwork_backward", grad_y, grad_hn, x,
                                                      w_ih, batch_sizes, h0, w_hh, y, periods);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const Schedule schedule(batch_sizes, false);
  const DType dtype = dtype_of(h0);
  const cudaStream_t stream = current_stream(h0.device());
  const Tensor w = w_hh.contiguous(), gy = grad_y.contiguous(), y_c = y.contiguous();
  Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);  // [B, H] w.r.t. the h state
  Tensor dx = at::empty({sz.B, sz.H}, y.options());          // a step's gate gradients
  std::vector<Tensor> grad_gx;
  for (int64_t n : args.rows) grad_gx.push_back(at::empty({n, m.k}, y.options()));
  std::vector<int64_t> end = args.rows;  // module i's rows of grad_gx[i] not yet written
  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const Step step = schedule.step(s);
    const int64_t b = step.rows;
    if (b == 0) continue;
    check_launch(launch_clockwork_backward_step(
                     dtype, {nullptr, nullptr, y_c.data_ptr(), gy.data_ptr(), dh.data_ptr(),
                             dx.data_ptr(), m.active_mask(s), sz.H, m.k, step}, stream),
                 "clockwork backward step");
    for (int64_t i = 0; i < m.count(); ++i) {
      if (!m.active(i, s)) continue;
      const int64_t u0 = i * m.k, columns = sz.H - u0;
      const Tensor dx_i = rows(dx, 0, b).narrow(1, u0, m.k);  // [b, k]
      end[i] -= b;
      rows(grad_gx[i], end[i], b).copy_(dx_i);
      rows(dh, 0, b).narrow(1, u0, columns).addmm_(dx_i, clockwork_block(w, m, i));
    }
  }
  const Tensor grad_w = clockwork_weight_grad(grad_gx, y_c, h0, schedule, m);
  const std::vector<Tensor> active_rows = clockwork_active_rows(schedule, m, x.device());
  const auto [grad_w_ih, grad_bias] =
      clockwork_input_weight_grads(grad_gx, clockwork_module_inputs(x, active_rows), w_ih, m);
  const Tensor grad_x = input_grad ? clockwork_input_grad(grad_gx, x, w_ih, active_rows, m)
                                    : at::empty({0, x.size(1)}, x.options());
  return {grad_x, grad_w_ih, grad_bias, dh, grad_w.to(w.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CUDA, m) {
  m.impl("clockwork_forward", &forward_op);
  m.impl("clockwork_backward", &backward_op);
}

}  // namespace cuda
}  // namespace fastrnn
