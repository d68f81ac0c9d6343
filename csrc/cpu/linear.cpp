// fastrnn::linear on the CPU: input [N, K] @ weight^T + bias, on the CPUs where it was
// measured (linear_onednn_min_depth) through oneDNN's inner product (the op
// mkldnn::_linear_pointwise that torch registers where it is built with oneDNN) from a
// depth K, and below it, or for a result of linear_fresh_bytes or more, through
// panel_gemm.h's kernel into a buffer reused from call to call (panel_linear); in bfloat16
// with a bias through oneDNN where it computes in bfloat16 (linear_onednn_bfloat16);
// elsewhere through at::addmm (the BLAS torch calls: MKL on x86), into such a buffer too.
// Who calls it: fastrnn/_input_product.py (the layers' input products and gradients),
// fastrnn/_ops.py (lstm_input_forward's input gradient) and cpu/backend.cpp (that op's
// input product where its walk does not form it).

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../ops.h"
#include "linear.h"
#include "panel_gemm.h"
#include "walk_state.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// oneDNN's inner product: (input, weight, bias, "none", {}, nullopt) -> input @ weight^T + bias.
using OnednnLinear = Tensor(const Tensor&, const Tensor&, const OptionalTensor&, c10::string_view,
                            c10::List<std::optional<c10::Scalar>>,
                            std::optional<c10::string_view>);

// Its handle, or none where this torch has no such op.
const std::optional<c10::TypedOperatorHandle<OnednnLinear>>& onednn_linear() {
  static const auto op = []() -> std::optional<c10::TypedOperatorHandle<OnednnLinear>> {
    const auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!handle) return std::nullopt;
    return handle->typed<OnednnLinear>();
  }();
  return op;
}

// The least depth K from which oneDNN's float32 product beat at::addmm: 2 threads, AMD EPYC
// (Zen 4, AVX-512), ms, best of 3x21, [N, K] @ [K, M], addmm vs oneDNN:
//   K = 512, 256 and 1024 deep: 4096x512 @ 1024 23.5 vs 20.5, 256x512 @ 1024 1.54 vs 1.28,
//     4096x256 @ 1024 11.8 vs 10.7, 1024x256 @ 256 0.668 vs 0.655, 6400x1024 @ 256 (the
//     input gradient of a layer with H = 64) 19.3 vs 15.6, 6400x2048 @ 512 73.3 vs 61.3;
//   about even at K = 100 and 128 (4096x100 @ 1024 4.84 vs 4.69, 4096x128 @ 256 1.34 vs
//     1.40), slower below (4096x64 @ 1024 3.04 vs 3.27, 4096x32 @ 256 0.355 vs 0.399).
// Measured on AMD only, where MKL keeps to AVX2: on other CPUs the op stays with at::addmm
// (bfloat16 products too, linear_onednn_bfloat16).
constexpr int64_t kOnednnMinDepth = 256;

}  // namespace
}  // namespace cpu

bool measured_cpu() {
  static const bool amd = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return bool(__builtin_cpu_is("amd"));
#else
    return false;
#endif
  }();
  return amd;
}

int64_t linear_onednn_min_depth() {
  static const int64_t depth =
      measured_cpu() && cpu::onednn_linear().has_value() ? cpu::kOnednnMinDepth : int64_t{0};
  return depth;
}

bool linear_onednn_bfloat16() {
  static const bool supported = [] {
    const auto handle =
        c10::Dispatcher::singleton().findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    return linear_onednn_min_depth() > 0 && handle && handle->typed<bool()>().call();
  }();
  return supported;
}

int64_t linear_pooled_bytes() { return cpu::ReusingAllocator::kMinBytes; }

int64_t linear_fresh_bytes() { return cpu::ReusingAllocator::kAlwaysFreshBytes; }

namespace cpu {
namespace {

// input [N, K] @ weight^T + bias (weight [M, K], bias [M] or none) through panel_gemm.h's
// kernel, float32, on the CPUs measured below oneDNN's depth or for a result of
// linear_fresh_bytes or more: weight packed into panels of W = kPanelWidth columns, the
// threads splitting the panels; each thread takes its panels up to kChunkBytes at a time
// (in L2 over all the rows), blocks of up to kMaxPanelRows rows of input (in L1 over the
// chunk) at a time, and adds the bias as it stores. The
// result comes from walk_buffer: fresh, a large one page-faults at first touch. 2 threads,
// AMD EPYC (Zen 4), ms, median of 15, three processes alternated, at::addmm vs this:
// 6400x100 @ 1024 7.5-8.5 vs 7.1-7.3, 3200x128 @ 512 2.06-2.37 vs 2.17-2.20, 700x200 @ 800
// 1.12-1.25 vs 1.10-1.16, 6400x100 @ 256 1.63-2.34 vs 1.73-1.75, 6400x64 @ 4096 (105 MB of
// result) 48-51 vs 18.2-18.5 (21.1-21.6 with at::addmm into a reused buffer).
Tensor panel_linear(const Tensor& input, const Tensor& weight, const OptionalTensor& bias) {
  constexpr int64_t W = kPanelWidth<float>, kChunkBytes = 256 << 10;
  const Tensor x = input.contiguous(), w = weight.contiguous();
  const Tensor b = bias ? bias->contiguous() : Tensor();
  const int64_t N = x.size(0), K = x.size(1), M = w.size(0), panels = (M + W - 1) / W;
  Tensor out = walk_buffer({N, M}, x.options());
  Tensor packed = at::empty({panels * K * W}, x.options());
  const float *x_data = x.data_ptr<float>(), *w_data = w.data_ptr<float>();
  const float* b_data = b.defined() ? b.data_ptr<float>() : nullptr;
  float *out_data = out.data_ptr<float>(), *panel_data = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      pack_panel(panel_data + p * K * W, K, 1, [&](int64_t c) -> const float* {
        return p * W + c < M ? w_data + (p * W + c) * K : nullptr;
      });
    }
  });
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / (K * W * int64_t(sizeof(float))));
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    const float* rows[kMaxPanelRows];
    float sums[kMaxPanelRows * W];
    for (int64_t c0 = begin; c0 < end; c0 += chunk) {
      for_each_row_block(N, [&](int64_t r0, int n) {
        for (int r = 0; r < n; ++r) rows[r] = x_data + (r0 + r) * K;
        for (int64_t p = c0; p < std::min(end, c0 + chunk); ++p) {
          panel_product(n, rows, panel_data + p * K * W, K, sums);
          const int64_t columns = std::min(W, M - p * W);
          for (int r = 0; r < n; ++r) {
            float* dst = out_data + (r0 + r) * M + p * W;
            for (int64_t c = 0; c < columns; ++c) {
              dst[c] = b_data ? sums[r * W + c] + b_data[p * W + c] : sums[r * W + c];
            }
          }
        }
      });
    }
  });
  return out;
}

}  // namespace

Tensor linear(const Tensor& input, const Tensor& weight, const OptionalTensor& bias) {
  const WithoutAutocast no_autocast;
  TORCH_CHECK(input.dim() == 2 && weight.dim() == 2 && input.size(1) == weight.size(1),
              "fastrnn::linear: input [N, K] and weight [M, K] expected, got ", input.sizes(),
              " and ", weight.sizes());
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(),
              "fastrnn::linear: input and weight must have one dtype, got ",
              input.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == weight.size(0) &&
                        bias->scalar_type() == input.scalar_type()),
              "fastrnn::linear: bias [", weight.size(0), "] of the input's dtype expected");
  TORCH_CHECK(input.is_floating_point(), "fastrnn::linear: a floating dtype expected, got ",
              input.scalar_type());
  // oneDNN refuses empty operands and a strided input (its weight may be transposed). With
  // oneDNN switched off the op is at::addmm at every depth, as the layers' rule is.
  const bool onednn_on = input.size(0) > 0 && weight.size(0) > 0 && input.size(1) > 0 &&
                         at::globalContext().userEnabledMkldnn();
  const int64_t depth = linear_onednn_min_depth();
  const bool measured = input.scalar_type() == at::kFloat && depth > 0 && onednn_on;
  const auto onednn = [&] {
    const Tensor w = weight.is_contiguous() || weight.t().is_contiguous() ? weight
                                                                           : weight.contiguous();
    const OptionalTensor b = bias ? OptionalTensor(bias->contiguous()) : std::nullopt;
    return onednn_linear()->call(input.contiguous(), w, b, "none",
                                 c10::List<std::optional<c10::Scalar>>(), std::nullopt);
  };
  // at::addmm into a reused buffer: a fresh result of 1 MB or more page-faults at first
  // touch (LSTM, T35 B20 I=H=200, the input product [700, 200] @ [200, 800]: 0.37 ms of
  // its 1.6 ms).
  const auto blas = [&] {
    Tensor out = walk_buffer({input.size(0), weight.size(0)}, input.options());
    return bias ? at::addmm_out(out, *bias, input, weight.t())
                : at::mm_out(out, input, weight.t());
  };
  // bfloat16 with a bias: oneDNN's inner product adds the bias as it stores the result, where
  // at::addmm first copies it into every row (2 threads, AMD EPYC with AVX512-BF16, ms,
  // median of 7, at::addmm vs oneDNN: 6400x512 @ 2048 34.7 vs 31.8, 6400x256 @ 1024 9.2 vs
  // 8.5, 700x200 @ 800 0.59 vs 0.55).
  if (input.scalar_type() == at::kBFloat16 && bias && onednn_on && linear_onednn_bfloat16()) {
    return onednn();
  }
  if (!measured) return blas();
  // From linear_fresh_bytes of result the panel kernel at any depth: oneDNN's result, fresh,
  // page-faults (2 threads, AMD EPYC, ms, median of 9, oneDNN vs the panel kernel: 6400x512
  // @ 2048 83-85 vs 66-69, 12800x256 @ 1024 54.5 vs 37.0, 6400x1024 @ 2048 156 vs 142,
  // 51200x256 @ 256 54.7 vs 40.8). With smaller results oneDNN was 0-7% faster from its
  // depth (6400x256 @ 1024 16.5 vs 16.8, 3200x2048 @ 512 32.3 vs 35.0).
  const bool fresh_result = input.size(0) * weight.size(0) * int64_t(sizeof(float)) >=
                            linear_fresh_bytes();
  if (input.size(1) < depth || fresh_result) {
    // The panel kernel's threads split the columns: measured with 2 threads and 16 or more
    // panels; with fewer than 8 panels a thread, at::addmm (which splits the rows too).
    const int64_t panels = (weight.size(0) + kPanelWidth<float> - 1) / kPanelWidth<float>;
    return panels < 8 * at::get_num_threads() ? blas() : panel_linear(input, weight, bias);
  }
  return onednn();
}

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) { m.impl("linear", &linear); }

}  // namespace cpu
}  // namespace fastrnn
