#pragma once
// The sparse walk (forward only): a recurrent weight in CSR form (most of a reservoir's
// weights are zero: an echo state network keeps about 10% of them), its rows read in place.
// One parallel region for the whole walk, as the fused walks (fused_split.h): each thread
// owns a slice of the hidden units; per step it forms its units' entries of
// gh = h_prev @ w_hh^T from their rows' nonzeros, runs the gate loops on them and meets
// the other threads at the barrier, since the next step reads every unit. Shapes and
// buffers: walk_state.h; here P = H.

#include <vector>

#include "csr_dot.h"
#include "fused_split.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {

// w_hh: [G*H, H] sparse CSR, int32 indices (checks.h's csr_weight); gh: [B, G*H] scratch.
// Below 65537 units a walk of kNarrowFromSteps steps or more reads 16-bit copies of the
// column indices, made once per call: a quarter less to stream each step (2000 units, 10%
// nonzeros, float32, batch 1, 10,000 steps, 4 alternating runs: 0.83 s with the int32
// indices, 0.755 s with these: 7.5 us a step, where the copy takes about 20 us, so a call
// of a step or two, as a closed loop makes them, reads the int32 indices).
template <class Cell, typename T>
void sparse_forward(const ForwardState<T>& st, const Schedule& schedule, const at::Tensor& w_hh,
                    T* gh) {
  constexpr int64_t G = Cell::kGates, S = Cell::kSaved;
  constexpr int64_t kUnitChunk = 16;  // units are shared out in whole chunks
  const int64_t H = st.H;
  const int32_t* crow = w_hh.crow_indices().data_ptr<int32_t>();
  const at::Tensor col_t = w_hh.col_indices();
  const T* values = w_hh.values().data_ptr<T>();
  const auto units = forward_units_for<Cell, T>(st.saved != nullptr, st.b_hh != nullptr);
  const auto walk = [&](const auto* col) {
    run_split_walk(FusedSplit::kUnits, st.B, H, kUnitChunk, [](int64_t) {},
                   [&](int64_t j0, int64_t j1, int64_t r_begin, int64_t r_end, const auto& sync) {
      std::vector<const T*> h_prev(r_end - r_begin);
      for (int64_t s = 0; s < schedule.steps(); ++s) {
        const int64_t first = schedule.first_row(s);
        const int64_t r_last = std::min(r_end, schedule.rows(s));
        // h_prev from y (or h0): rows of the h state are being updated by other threads.
        for (int64_t r = r_begin; r < r_last; ++r) {
          h_prev[r - r_begin] = previous_row(st.y, H, st.h0, schedule, s, r, H);
        }
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t j = j0; j < j1; ++j) {  // the row of w_hh stays in L1 over the rows
            const int64_t k0 = crow[g * H + j], k1 = crow[g * H + j + 1];
            for (int64_t r = r_begin; r < r_last; ++r) {
              gh[r * G * H + g * H + j] = T(row_dot(col, values, k0, k1, h_prev[r - r_begin]));
            }
          }
        }
        for (int64_t r = r_begin; r < r_last; ++r) {
          const int64_t packed = first + r;
          units(st.gx + packed * G * H, gh + r * G * H, st.b_hh, st.unit_params, st.h + r * H,
                Cell::kCellState ? st.carry + r * H : nullptr,
                st.saved != nullptr ? st.saved + packed * S * H : nullptr, st.h + r * H,
                st.y + packed * H, H, j0, j1);
        }
        sync();
      }
    });
  };
  const int32_t* col = col_t.data_ptr<int32_t>();
  constexpr int64_t kNarrowFromSteps = 4;
  if (H <= 65536 && schedule.steps() >= kNarrowFromSteps) {
    const std::vector<uint16_t> narrow(col, col + col_t.numel());
    walk(narrow.data());
  } else {
    walk(col);
  }
}

}  // namespace cpu
}  // namespace fastrnn
