#pragma once
// The cells by their CellKind number (csrc/cells/policy.h; Python reads the numbers from
// fastrnn._C.<CELL>_KIND), for the C entry points of the native test libraries.

#include "cells/all.h"

namespace fastrnn {

// fn(Cell{}) for the policy of cell kind `kind`; `otherwise` for a number that is no kind.
template <class R, class F>
R with_cell(int kind, R otherwise, F&& fn) {
  switch (static_cast<CellKind>(kind)) {
#define FASTRNN_CELL_CASE(Cell, NAME) \
  case Cell::kKind:                   \
    return fn(Cell{});
    FASTRNN_FOR_EACH_CELL(FASTRNN_CELL_CASE)
#undef FASTRNN_CELL_CASE
    case CellKind::kLeakyTanh:  // forward only (an echo state network's): not in the list
    case CellKind::kLayerNormLstm:  // row-wise (cells/row.h): not per-unit code's
    case CellKind::kLayerNormGru:
      break;
  }
  return otherwise;
}

}  // namespace fastrnn
