// The CUDA ops without a GPU: their host glue (csrc/cuda/*_ops.cpp) and per-unit step work
// (csrc/cuda/*_step.h) built for the host, each kernel launch becoming a loop over the
// step's rows and units. Registered as the CPU kernels of a library of its own,
// fastrnn_cuda_emulated, with fastrnn's schemas; tests/test_cuda_emulation.py builds it and
// checks it against the CPU ops. What it cannot check: the launch geometry, streams, cuBLAS
// and the device code generation (scripts/check_cuda.py compiles that).

#define FASTRNN_CUDA_EMULATION
#define FASTRNN_CUDA_LIBRARY fastrnn_cuda_emulated
#define FASTRNN_CUDA_KEY CPU

#include "../../csrc/cuda/gru_ops.cpp"
#include "../../csrc/cuda/gru_step.h"
#include "../../csrc/cuda/lstm_ops.cpp"
#include "../../csrc/cuda/lstm_step.h"
#include "../../csrc/cuda/rnn_ops.cpp"
#include "../../csrc/cuda/rnn_step.h"
#include "../../csrc/ops.h"

TORCH_LIBRARY(fastrnn_cuda_emulated, m) { fastrnn::define_ops(m); }

extern "C" const char* cudaGetErrorString(cudaError_t) { return "(emulated launch)"; }

namespace fastrnn {
namespace cuda {
namespace {

// unit(row, j) over the step's rows and columns [0, width): what the kernel's threads do.
template <typename Unit>
cudaError_t host_loop(const Step& step, int64_t width, const Unit& unit) {
  for (int64_t row = 0; row < step.rows; ++row) {
    for (int64_t j = 0; j < width; ++j) unit(row, j);
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t lstm_forward_step(DType dtype, const LstmForwardStep& a, cudaStream_t) {
  const bool save = a.saved != nullptr, write_y = a.y != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, a.H, [&](int64_t row, int64_t j) {
      if (save && write_y) {
        lstm_forward_unit<T, true, true>(a, row, j);
      } else if (save) {
        lstm_forward_unit<T, true, false>(a, row, j);
      } else if (write_y) {
        lstm_forward_unit<T, false, true>(a, row, j);
      } else {
        lstm_forward_unit<T, false, false>(a, row, j);
      }
    });
  });
}

cudaError_t lstm_backward_step(DType dtype, const LstmBackwardStep& a, cudaStream_t) {
  const bool proj = a.m != nullptr, gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, lstm_backward_width(a), [&](int64_t row, int64_t j) {
      if (proj && gather) {
        lstm_backward_unit<T, true, true>(a, row, j);
      } else if (proj) {
        lstm_backward_unit<T, true, false>(a, row, j);
      } else if (gather) {
        lstm_backward_unit<T, false, true>(a, row, j);
      } else {
        lstm_backward_unit<T, false, false>(a, row, j);
      }
    });
  });
}

cudaError_t gru_forward_step(DType dtype, const GruForwardStep& a, cudaStream_t) {
  const bool bias = a.b_hh != nullptr, save = a.saved != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, a.H, [&](int64_t row, int64_t j) {
      if (bias && save) {
        gru_forward_unit<T, true, true>(a, row, j);
      } else if (bias) {
        gru_forward_unit<T, true, false>(a, row, j);
      } else if (save) {
        gru_forward_unit<T, false, true>(a, row, j);
      } else {
        gru_forward_unit<T, false, false>(a, row, j);
      }
    });
  });
}

cudaError_t gru_backward_step(DType dtype, const GruBackwardStep& a, cudaStream_t) {
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, a.H, [&](int64_t row, int64_t j) {
      if (gather) {
        gru_backward_unit<T, true>(a, row, j);
      } else {
        gru_backward_unit<T, false>(a, row, j);
      }
    });
  });
}

cudaError_t rnn_forward_step(DType dtype, const RnnForwardStep& a, cudaStream_t) {
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, a.H, [&](int64_t row, int64_t j) {
      if (a.relu) {
        rnn_forward_unit<T, true>(a, row, j);
      } else {
        rnn_forward_unit<T, false>(a, row, j);
      }
    });
  });
}

cudaError_t rnn_backward_step(DType dtype, const RnnBackwardStep& a, cudaStream_t) {
  const bool gather = a.h_prev != nullptr;
  return dispatch(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return host_loop(a.step, a.H, [&](int64_t row, int64_t j) {
      if (a.relu && gather) {
        rnn_backward_unit<T, true, true>(a, row, j);
      } else if (a.relu) {
        rnn_backward_unit<T, true, false>(a, row, j);
      } else if (gather) {
        rnn_backward_unit<T, false, true>(a, row, j);
      } else {
        rnn_backward_unit<T, false, false>(a, row, j);
      }
    });
  });
}

}  // namespace cuda
}  // namespace fastrnn
