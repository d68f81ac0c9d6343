// fastrnn::linear on the CPU: input [N, K] @ weight^T + bias through oneDNN's inner product
// (the op mkldnn::_linear_pointwise that torch registers where it is built with oneDNN)
// where that measured faster, else through at::addmm (the BLAS torch calls: MKL on x86).
// Where the layers call it: fastrnn/_input_product.py.

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../ops.h"

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
// Measured on AMD only, where MKL keeps to AVX2: on other CPUs the op stays with at::addmm.
constexpr int64_t kOnednnMinDepth = 256;

}  // namespace
}  // namespace cpu

int64_t linear_onednn_min_depth() {
  static const int64_t depth = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool measured = __builtin_cpu_is("amd");
#else
    const bool measured = false;
#endif
    return measured && cpu::onednn_linear().has_value() ? cpu::kOnednnMinDepth : int64_t{0};
  }();
  return depth;
}

namespace cpu {
namespace {

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
  // oneDNN refuses empty operands and a strided input (its weight may be transposed).
  const int64_t depth = linear_onednn_min_depth();
  const bool onednn = input.scalar_type() == at::kFloat && depth > 0 && input.size(0) > 0 &&
                      weight.size(0) > 0 && input.size(1) >= depth &&
                      at::globalContext().userEnabledMkldnn();
  if (!onednn) return bias ? at::addmm(*bias, input, weight.t()) : at::mm(input, weight.t());
  const Tensor w = weight.is_contiguous() || weight.t().is_contiguous() ? weight
                                                                         : weight.contiguous();
  const OptionalTensor b = bias ? OptionalTensor(bias->contiguous()) : std::nullopt;
  return onednn_linear()->call(input.contiguous(), w, b, "none",
                               c10::List<std::optional<c10::Scalar>>(), std::nullopt);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) { m.impl("linear", &linear); }

}  // namespace cpu
}  // namespace fastrnn
