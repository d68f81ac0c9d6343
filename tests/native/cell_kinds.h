#pragma once
// The cells by their CellKind number (csrc/cells/policy.h; Python reads the numbers from
// fastrnn._C.<CELL>_KIND), for the C entry points of the native test libraries.

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"

namespace fastrnn {

// fn(Cell{}) for the policy of cell kind `kind`; `otherwise` for a number that is no kind.
template <class R, class F>
R with_cell(int kind, R otherwise, F&& fn) {
  switch (static_cast<CellKind>(kind)) {
    case CellKind::kLstm: return fn(lstm::Policy{});
    case CellKind::kGru: return fn(gru::Policy{});
    case CellKind::kRnnTanh: return fn(rnn::Policy<false>{});
    case CellKind::kRnnRelu: return fn(rnn::Policy<true>{});
  }
  return otherwise;
}

}  // namespace fastrnn
