#pragma once
// Which walk the CPU backend (backend.cpp) runs for a recurrence: the fused walks' policies
// (fused_split.h) per cell and direction, the state types and cells they take, the input
// product inside the fused forward walk, and the recurrent weight as the walks read it.
// Every threshold here was measured; the figures are next to each.

#include <ATen/ATen.h>

#include "../cells/policy.h"
#include "../common/recurrence.h"
#include "fused_split.h"
#include "linear.h"
#include "panel_operands.h"

namespace fastrnn {
namespace cpu {

// When the fused walks run (fused_split.h). Up to 512 rows both ways: against the BLAS walk
// (2 cores, AMD EPYC, float32, in-process shuffled, median of 5-7, ms, BLAS vs fused, LSTM
// then GRU), forward T25 H256 B224 40.6 vs 34.0, 30.4 vs 26.2; B256 47.3 vs 39.3, 28.9 vs
// 27.2; B320 48.2 vs 46.4, 43.7 vs 37.2; B512 89.0 vs 89.9, 71.4 vs 70.4; T50 H64 B256 14.9
// vs 9.2, 11.5 vs 6.1; T10 H1024 B256 246 vs 231, 169 vs 163; forward+backward, both
// forwards fused, T25 H256 B192 89.7 vs 87.9, 67.8 vs 66.2; B256 119 vs 116, 87.1 vs 85.1;
// B512 244 vs 236, 187 vs 184; T25 H512 B256 443 vs 444, 323 vs 322; T50 H64 B256 29.8 vs
// 23.7, 26.1 vs 19.3; B512 41.2 vs 40.8, 39.5 vs 37.5; T10 H1024 B256 683 vs 679, 524 vs
// 512; float64 and bfloat16 autocast alike (autocast forward+backward T25 B256 H256 87.8
// vs 67.0, 75.3 vs 57.7; forward 21.1 vs 21.4, 20.4 vs 18.7), and the variants
// (layer-normalised LSTM T25 B256 H256 forward 51.9 vs 44.7, forward+backward 144 vs 130;
// with peepholes 48.3 vs 39.5, 125 vs 121). (An earlier build of the fused walk lost from
// 256 rows forward and 128 backward.)
// The rows split against the units split (LSTM, median of 7 to 15 interleaved runs, us
// per step, units vs rows): forward B32 H128 159 vs 151, B16 H64 27.2 vs 29.0, B32 H256
// 307 vs 317; backward B8 H64 12.6 vs 11.8, B16 H64 27.4 vs 22.2, B32 H128 138 vs 116, B32
// H256 (a 1 MB weight) 493 vs 451, B64 H512 (4 MB) 3682 vs 3870.
// A walk takes at least one step per 256 KB of its weight, which it packs once per call
// (2 threads, in-process shuffled, median of 7, ms, BLAS vs fused, forward): LSTM T2 B32
// H1024 (16 MB) 6.52 vs 8.82, T5 B8 5.16 vs 7.40, T10 B8 10.5 vs 11.7, T50 B32 136 vs 141,
// T100 B8 77.8 vs 75.5; T10 B32 H768 (9 MB) 17.1 vs 17.9, T50 83.3 vs 79.3; GRU T10 B8
// H1024 6.88 vs 8.68, forward+backward 23.0 vs 26.3; RNN T5 B8 H1024 (4 MB) 1.27 vs 2.34,
// T2 B32 1.83 vs 2.52, T50 B32 39.2 vs 35.7.
constexpr int64_t kFusedWeightBytesPerStep = 256 << 10;
constexpr FusedPolicy kFusedForward{512, 16, 384 << 10, 0, 0, kFusedWeightBytesPerStep};
constexpr FusedPolicy kFusedBackward{512, 4, 1 << 20, 0, 0, kFusedWeightBytesPerStep};

// The fused walk's state types: bfloat16 where its products have their kernel
// (panel_operands.h). Measured in bfloat16 (under CPU autocast inference), 2 threads, AMD
// EPYC, in-process interleaved, median of 11, ms, fused vs BLAS: T200 B32 I100 H256 LSTM
// 18.3 vs 24.2, GRU 14.6 vs 20.8, RNN 7.3 vs 14.1; T100 B64 I=H=512 LSTM 78.8 vs 78.0, GRU
// 63.8 vs 68.9, RNN 24.1 vs 22.5; bfloat16 weights, fwd+bwd, median of 7: T200 B32 I100
// H256 LSTM 57.9 vs 77.7, GRU 45.7 vs 63.3, RNN 17.9 vs 31.0; T100 B64 I=H=512 LSTM 246
// vs 239, RNN 63.7 vs 69.0.
template <typename T>
constexpr bool kFusable = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                          (std::is_same_v<T, BFloat16> && kBfloat16Panels);

// Whether the fused walk may run a cell, measured against the BLAS walk (2 threads, AMD
// EPYC, median of alternating runs, ms, BLAS vs fused): the LSTM as above; the GRU gains,
// T50 B8 H64 forward 0.42 vs 0.26, forward+backward 1.18 vs 0.86, T100 B32 H128 18.0-18.7
// vs 14.3-16.8, T100 B64 H512 424-462 vs 416-437; the RNN with its own policy, below. The
// LSTM's variants (the other cells with a cell state) take the LSTM's choice; the
// layer-normalised GRU the GRU's. A row-wise cell's
// fused walk splits the rows, never the units: where the units would be split it splits
// the rows if every thread gets one, else takes the BLAS walk (layer-normalised LSTM,
// T50 forward+backward, 2 threads, median of 6 interleaved, ms, BLAS vs rows: B1 H1024
// 26.9 vs 56.1, B4 H1024 83.8 vs 71.1, B8 H512 25.6 vs 19.3, B32 H256 26.5 vs 18.4, B64
// H128 17.9 vs 12.2).
template <class Cell>
constexpr bool kRnnCell = Cell::kKind == CellKind::kRnnTanh || Cell::kKind == CellKind::kRnnRelu;
template <class Cell>
constexpr bool kFusedCell = Cell::kCellState || Cell::kKind == CellKind::kGru ||
                            Cell::kKind == CellKind::kLayerNormGru || kRnnCell<Cell>;

// The RNN's fused walks in float and double: its gate loop is one activation, so its step
// is its products, and its own limits. Against the BLAS walk (2 threads, AMD EPYC, float,
// I = H, torch.nn.RNN's layer, in-process shuffled, median of 9-11, ms, BLAS vs fused,
// forward then forward+backward): T100 B32 H128 2.06 vs 1.79, 5.66 vs 4.83; T256 B32 H256
// 15.0 vs 13.4, 40.9 vs 39.1; T200 B32 I100 H256 9.15 vs 8.26, 23.9 vs 22.3; T100 B64 H512
// 44.9 vs 38.8, 127 vs 112; T50 B64 H1024 76.6 vs 69.5, 228 vs 204; T50 B8 H64 0.18 vs
// 0.16, 0.61 vs 0.52; T200 B1 H256 1.25 vs 1.02, 3.17 vs 2.32; T35 B20 H200 1.20 vs 0.93,
// 3.13 vs 2.66. Not fused: forward beyond 64 rows (T50 H256 B96 7.45 vs 7.77, B128 10.6 vs
// 11.2, B64 5.56 vs 4.92), and below 8 rows a w_hh over 256 KB (T100 B1 H512 1.26 vs 1.58,
// 3.39 vs 3.75; B1 H1024 4.69 vs 5.87, 15.5 vs 17.2; B2 H512 forward+backward 4.75 vs 5.36;
// B8 H1024 20.7 vs 19.5, 63.4 vs 57.8). The rows split from 4 rows per thread forward (T100
// H64, units vs rows: B8 0.27 vs 0.25, B16 0.43 vs 0.38). With a bfloat16 w_hh (autocast)
// its products multiply in bfloat16 and it takes the other cells' policy (fwd+bwd, BLAS walk
// in float vs fused in bfloat16, median of 7, ms: T100 B64 I=H=512 112 vs 77, T200 B32 I100
// H256 40.5 vs 26.9, T100 B32 I=H=128 10.8 vs 7.4).
constexpr FusedPolicy kRnnForward{64, 4, 384 << 10, 8, 256 << 10, kFusedWeightBytesPerStep};
constexpr FusedPolicy kRnnBackward{128, 4, 1 << 20, 8, 256 << 10, kFusedWeightBytesPerStep};

// Whether a cell's forward may be given a sparse w_hh: the cells of the ops that build one.
template <class Cell>
constexpr bool kSparseCell = Cell::kKind == CellKind::kLeakyTanh;

// The fused walk's split for a walk of B rows (kNone: the BLAS walk), forward or
// backward. A single step (a cell call) takes the BLAS walk: the fused walk packs the
// recurrent weight once per walk, which pays only over many steps (LSTMCell, T = 1, fused
// vs BLAS, us: H1024 B8 forward 6470 vs 3160).
template <class Cell>
FusedSplit fused_walk_split(bool forward, const RecurrenceSizes& size, const at::Tensor& w_hh,
                            const at::Tensor& w_hr) {
  if (!kFusedCell<Cell> || w_hr.defined() || size.T == 1) return FusedSplit::kNone;
  const bool bfloat16_products = kBfloat16Panels && w_hh.scalar_type() == at::kBFloat16;
  const bool rnn = kRnnCell<Cell> && !bfloat16_products;
  const FusedPolicy& policy = forward ? (rnn ? kRnnForward : kFusedForward)
                                      : (rnn ? kRnnBackward : kFusedBackward);
  const FusedSplit split = fused_split(policy, size.T, size.B, w_hh.nbytes());
  if (!Cell::kRowWise || split != FusedSplit::kUnits) return split;
  return size.B >= fused_threads() ? FusedSplit::kRows : FusedSplit::kNone;
}

// The recurrent weight as the walks read it in the state's type (state: h0 or y), or
// undefined for the fused walk of a bfloat16 w_hh and a float state (bfloat16 autocast),
// whose products multiply in bfloat16 (panel_operands.h) where the build has them. Every
// other walk reads a bfloat16 w_hh converted to float, exactly. A sparse w_hh as it is
// (only the sparse walk reads it).
inline at::Tensor walk_weight(const at::Tensor& w_hh, const at::Tensor& state,
                              FusedSplit split) {
  if (w_hh.layout() != at::kStrided || w_hh.scalar_type() == state.scalar_type()) return w_hh;
  const bool bfloat16_walk = kBfloat16Panels && split != FusedSplit::kNone;
  return bfloat16_walk ? at::Tensor() : w_hh.to(state.scalar_type());
}

// The fewest rows (B) from which a fused walk forms the input product itself (ForwardArgs::x):
// the step's products read the w_ih panels once per block of rows, where a GEMM over all
// the rows is bound by its multiply-adds. LSTM inference, T200 I=H=256, 2 threads, AMD EPYC,
// in-process interleaved, median of 9, ms, input product first vs in the walk: B1 2.71 vs
// 4.20, B2 4.21 vs 5.05, B4 4.84 vs 4.94 (I100: 4.01 vs 3.86), B8 10.1 vs 9.7. Measured on
// AMD's Zen 4 only, in AVX-512 builds: on other CPUs (measured_cpu) and builds the walks form
// gx first, as torch's LSTM does, unless FASTRNN_CPU_FUSED forces a fused walk (the panel
// kernel has not been timed against oneDNN's GEMM on Intel's cores, with two 512-bit FMA
// units, nor in 32-byte vectors).
constexpr int64_t kFoldMinRows = 4;
constexpr bool kFoldMeasuredBuild = kWideVectorBytes == 64;

// Whether a forward given input rows (ForwardArgs::x, its sizes checked) forms its input
// product inside its fused walk (fused_forward), split as `split`; else gx comes first.
inline bool input_in_walk(const ForwardArgs& a, FusedSplit split) {
  const auto dtype = a.h0.scalar_type();
  const bool operands = dtype == at::kFloat || dtype == at::kDouble ||
                        (dtype == at::kBFloat16 && kBfloat16Panels);  // in T, as the state
  return a.x.defined() && a.x.size(1) > 0 && a.size.B >= kFoldMinRows &&
         ((kFoldMeasuredBuild && measured_cpu()) || fused_walk_forced()) &&
         split != FusedSplit::kNone && a.w_hh.layout() == at::kStrided &&
         a.w_hh.scalar_type() == dtype && operands;
}

}  // namespace cpu
}  // namespace fastrnn
