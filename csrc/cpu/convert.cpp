// fastrnn::convert on the CPU: a tensor converted to another dtype, into a buffer of the
// walks' pool (walk_state.h). Where the layers call it: fastrnn/_input_product.py, around
// the input products that multiply in bfloat16 under autocast, whose [N, G*H] results and
// gradients are tens of MB: a fresh tensor of that size is mapped fresh by glibc and takes
// a page fault every 4 KB (bfloat16 [6400, 2048] to float, 2 threads, AMD EPYC: 12.9 ms
// into a fresh tensor, 1.5 ms into one used before).

#include <torch/library.h>

#include "../common/checks.h"
#include "walk_state.h"

namespace fastrnn {
namespace cpu {
namespace {

at::Tensor convert(const at::Tensor& self, at::ScalarType dtype) {
  const WithoutAutocast no_autocast;
  return walk_buffer(self.sizes(), self.options().dtype(dtype)).copy_(self);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) { m.impl("convert", &convert); }

}  // namespace cpu
}  // namespace fastrnn
