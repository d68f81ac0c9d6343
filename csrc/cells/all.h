#pragma once
// Every cell the library has, in one list: the code that names each cell explicitly (the
// CUDA kernels' template instantiations, the facts fastrnn._C exports, the native tests'
// cell numbers) walks it, so a new cell is its header and one line here. The forward-only
// leaky cell (leaky.h) is included but not listed: the list's users instantiate backward.

#include "gru.h"
#include "layer_norm.h"
#include "leaky.h"
#include "lstm.h"
#include "rnn.h"

// X(Cell, NAME) for each cell policy and the name Python knows the cell by.
#define FASTRNN_FOR_EACH_CELL(X)                                   \
  X(::fastrnn::lstm::Policy, LSTM)                                 \
  X(::fastrnn::lstm::PeepholePolicy, PEEPHOLE_LSTM)                \
  X(::fastrnn::lstm::CoupledPolicy, COUPLED_LSTM)                  \
  X(::fastrnn::lstm::PeepholeCoupledPolicy, PEEPHOLE_COUPLED_LSTM) \
  X(::fastrnn::gru::Policy, GRU)                                   \
  X(::fastrnn::rnn::Policy<false>, RNN_TANH)                       \
  X(::fastrnn::rnn::Policy<true>, RNN_RELU)

// The row-wise cells (row.h), which the per-unit code (the persistent kernels, the single
// step ops) does not run: X(Cell, NAME) as above.
#define FASTRNN_FOR_EACH_ROW_CELL(X)            \
  X(::fastrnn::ln::LstmPolicy, LAYER_NORM_LSTM) \
  X(::fastrnn::ln::GruPolicy, LAYER_NORM_GRU)
