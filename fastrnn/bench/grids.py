"""Benchmark cases, blocks and grids (the named grids: catalog.py), plus custom grids.

A Case is one measurement: a cell, a dtype, a shape, a mode ("fwd": inference under
torch.no_grad; "fwdbwd": forward plus backward), a kind and whether the initial states are
given (hx). Kinds (KINDS):
- "layer": one call of fastrnn.LSTM/GRU/RNN on a sequence [T, B, I] (every grid but step);
- "cell": one call of fastrnn.LSTMCell/GRUCell/RNNCell on an input [B, I] (T is 1);
- "cell_loop": T calls of a cell, each on step t's input with the states the previous call
  returned, as a training or decoding loop runs one (layers 1, one direction for both cell
  kinds);
- "dilated": one call of fastrnn.DilatedLSTM/GRU/RNN (dilations 1, 2, 4, ... per layer) on
  [T, B, I], against the same stack as a Python loop over torch.nn's cells
  (loops.CellLoopDilatedStack), the definition as a user writes it;
- "dilated_interleaved": the same call against one torch.nn layer per dilation on the
  subsequences laid side by side (loops.InterleavedDilatedStack), as published dilated-RNN
  code runs it (T a multiple of every dilation);
- "clockwork": one call of fastrnn.ClockworkRNN (periods 1, 2, 4, 8; cell RNN_TANH, one
  layer) against the same model as a Python loop over torch ops (loops.ClockworkLoop);
- "variant": one call of fastrnn.VariantLSTM or VariantGRU (cell PEEPHOLE_LSTM,
  COUPLED_LSTM, PEEPHOLE_COUPLED_LSTM, LAYER_NORM_LSTM or LAYER_NORM_GRU, one layer) against
  the same model as a plain PyTorch loop of its equations over torch ops (loops.VariantLoop).
hx: the initial states are given (random, and for fwdbwd differentiated, as the states a
loop carries are) rather than None. Results from before kind and hx had neither: they are
layer calls without hx (KEY_DEFAULTS, key_of).
How a layer call without hx is run, as models run it (the "clients" grid; the defaults are
the plain call of every other grid, and what a record from before these fields means):
- loss: what the fwdbwd loss reads, "output" (the output sequence) or "final" (h_n of the
  last layer, both directions: a classifier reading the final state; an LSTM's c_n not);
- packed: the input is a PackedSequence (enforce_sorted=False) of B sequences whose lengths
  (Case.lengths) spread evenly from PACKED_MIN_LENGTH to T, in a fixed shuffled order;
- dropout: the modules' dropout between layers (layers >= 2), drawn in fwdbwd (training);
- autocast: None, or "bfloat16": the call runs under torch.autocast(device, that dtype),
  the modules staying in dtype.
A fwd case (eval mode, no loss) has the default loss and no dropout; Grid.cases gives its
fwd cases those.
A Grid is a list of Blocks, each a product of cells x dtypes x shapes x modes of one kind;
Grid.cases() expands it for a device.

Half-precision on the CPU: the "anchors" grid's bf16/fp16 LSTM (B=16, T=1024, H=768) is run
in float32 on the CPU (Block.cpu_dtypes), because torch.nn has no fast half-precision CPU
path to compare against; the case's "note" says so. An explicit --dtype is always obeyed.
"""

import itertools
import random
from dataclasses import dataclass, field

CELLS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
VARIANT_CELLS = ("PEEPHOLE_LSTM", "COUPLED_LSTM", "PEEPHOLE_COUPLED_LSTM", "LAYER_NORM_LSTM",
                 "LAYER_NORM_GRU")  # kind variant
MODES = ("fwd", "fwdbwd")
KINDS = ("layer", "cell", "cell_loop", "dilated", "dilated_interleaved", "clockwork",
         "variant")
DILATED_KINDS = ("dilated", "dilated_interleaved")  # fastrnn.dilated, per-kind baselines
KEY_FIELDS = ("cell", "dtype", "T", "B", "I", "H", "layers", "bidirectional", "mode", "kind",
              "hx", "loss", "packed", "dropout", "autocast")
# Key fields added later, and the value a record without one (an older results file) means.
KEY_DEFAULTS = {"kind": "layer", "hx": False, "loss": "output", "packed": False,
                "dropout": 0.0, "autocast": None}
LOSSES = ("output", "final")
AUTOCASTS = (None, "bfloat16")
PACKED_MIN_LENGTH = 5  # a packed case's shortest sequence (Case.lengths)

_CELL_ALIASES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH", "rnn_tanh": "RNN_TANH",
                 "tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "relu": "RNN_RELU",
                 **{cell.lower(): cell for cell in VARIANT_CELLS}}
_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
                  "float64": "float64", "fp64": "float64", "f64": "float64", "double": "float64",
                  "bfloat16": "bfloat16", "bf16": "bfloat16",
                  "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16"}
_DTYPE_SHORT = {"float32": "f32", "float64": "f64", "bfloat16": "bf16", "float16": "f16"}


def _parse(aliases, name, what, expected):
    try:
        return aliases[name.lower()]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; expected {expected}") from None


def parse_cell(name):
    """'lstm', 'RNN', 'rnn_relu', ... -> one of CELLS or VARIANT_CELLS (RNN: RNN_TANH)."""
    return _parse(_CELL_ALIASES, name, "cell", "one of LSTM, GRU, RNN, RNN_TANH, RNN_RELU, "
                  + ", ".join(VARIANT_CELLS))


def parse_dtype(name):
    """'fp32', 'bf16', 'half', ... -> the torch dtype's name (float32, bfloat16, ...)."""
    return _parse(_DTYPE_ALIASES, name, "dtype", "float32, float64, bfloat16 or float16")


def key_of(record):
    """The key of a result record or skipped entry (a dict), KEY_DEFAULTS for the fields a
    record from an older format lacks."""
    return tuple(record[k] if k in record or k not in KEY_DEFAULTS else KEY_DEFAULTS[k]
                 for k in KEY_FIELDS)


@dataclass(frozen=True)
class Case:
    """One measurement. key() identifies it across result files (see compare.py)."""
    cell: str
    dtype: str
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    mode: str = "fwdbwd"
    kind: str = "layer"
    hx: bool = False
    loss: str = "output"
    packed: bool = False
    dropout: float = 0.0
    autocast: str = None
    note: str = field(default="", compare=False)
    # at most this many timed rounds of one call, no warm-up but the parity check's (calls
    # of seconds; cases.run_case)
    max_rounds: int = field(default=None, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind in ("cell", "cell_loop") and (self.layers != 1 or self.bidirectional):
            raise ValueError(f"kind {self.kind} runs one cell: layers 1, one direction")
        if self.kind == "cell" and self.T != 1:
            raise ValueError("kind cell is one call of the cell: T must be 1")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"unknown autocast {self.autocast!r}; expected None or bfloat16")
        if self.mode == "fwd" and (self.loss != "output" or self.dropout):
            raise ValueError("a fwd case computes no loss and draws no dropout (eval mode): "
                             "loss output, dropout 0")
        if self.dropout and self.layers < 2:
            raise ValueError("dropout applies between layers: layers must be at least 2")
        if self.kind == "clockwork" and (self.cell != "RNN_TANH" or self.layers != 1 or
                                         self.bidirectional or self.H % 4):
            raise ValueError("kind clockwork is one tanh layer, one direction, H a multiple "
                             "of its 4 modules")
        if (self.kind == "variant") != (self.cell in VARIANT_CELLS) or (
                self.kind == "variant" and (self.layers != 1 or self.bidirectional)):
            raise ValueError("kind variant runs the variants (cells "
                             f"{', '.join(VARIANT_CELLS)}), one layer, one direction; they "
                             "run no other kind")
        if self.kind in DILATED_KINDS + ("clockwork", "variant") and self.hx:
            raise ValueError(f"kind {self.kind} runs from zero states: hx False")
        if self.kind == "dilated_interleaved" and self.T % 2 ** (self.layers - 1):
            raise ValueError("kind dilated_interleaved needs T a multiple of every dilation "
                             f"(1, 2, ..., {2 ** (self.layers - 1)})")
        if (self.kind != "layer" or self.hx) and (
                self.loss != "output" or self.packed or self.dropout or self.autocast):
            raise ValueError("loss, packed, dropout and autocast apply to a layer call "
                             "without hx")

    def key(self):
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    @property
    def compute_dtype(self):
        """The precision the case is judged in (parity tolerance, % of the GEMM peak):
        autocast's dtype, else dtype. torch.nn's GEMMs run in it under autocast; fastrnn's
        may not (_autocast_rules.autocast_compute_dtype: the recurrence in float32 in
        training)."""
        return self.autocast or self.dtype

    def lengths(self):
        """The B sequence lengths of a packed case (None if not packed): PACKED_MIN_LENGTH
        (or T if shorter) to T evenly spaced and rounded, shuffled with a fixed seed."""
        if not self.packed:
            return None
        low = min(PACKED_MIN_LENGTH, self.T)
        step = (self.T - low) / max(self.B - 1, 1)
        lengths = [round(low + i * step) for i in range(self.B)]
        random.Random(0).shuffle(lengths)
        return lengths

    def rows(self):
        """The (timestep, sequence) rows a layer walks: T*B, or for a packed case the sum of
        its lengths."""
        return sum(self.lengths()) if self.packed else self.T * self.B

    def options(self):
        """The non-default loss, packed, dropout and autocast, briefly ('' if none), e.g.
        'packed drop0.2 autocast-bf16 loss=final'."""
        return " ".join(part for part in (
            "packed" if self.packed else "", f"drop{self.dropout:g}" if self.dropout else "",
            f"autocast-{_DTYPE_SHORT[self.autocast]}" if self.autocast else "",
            f"loss={self.loss}" if self.loss != "output" else "") if part)

    def label(self):
        extra = (f" L{self.layers}" if self.layers != 1 else "") + (
            " bi" if self.bidirectional else "") + (
            f" {self.kind}" if self.kind != "layer" else "") + (" hx" if self.hx else "") + (
            f" {self.options()}" if self.options() else "")
        return (f"{self.cell} {_DTYPE_SHORT.get(self.dtype, self.dtype)} T={self.T} B={self.B} "
                f"I={self.I} H={self.H}{extra} {self.mode}")


@dataclass(frozen=True)
class Shape:
    """(T, B, I, H) plus depth and direction; inference_only shapes are timed fwd only."""
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    inference_only: bool = False


@dataclass(frozen=True)
class Block:
    """cells x dtypes x shapes x modes, of one kind, with or without hx, and loss, packed,
    dropout and autocast as Case has them (the fwd cases get loss output and no dropout);
    cpu_dtypes (if set) replace dtypes on the CPU; max_rounds (if set) caps the cases' timed
    rounds."""
    cells: tuple
    dtypes: tuple
    shapes: tuple
    modes: tuple = MODES
    cpu_dtypes: tuple = None
    note: str = ""
    kind: str = "layer"
    hx: bool = False
    max_rounds: int = None
    loss: str = "output"
    packed: bool = False
    dropout: float = 0.0
    autocast: str = None


@dataclass(frozen=True)
class Grid:
    """A named list of blocks; threads is the grid's default torch thread count (or None),
    min_sample its default least seconds per timed sample (timing.interleaved; None: one
    call per sample)."""
    name: str
    description: str
    blocks: tuple
    threads: int = None
    min_sample: float = None

    def cases(self, device="cpu", modes=None, dtypes=None, cells=None, kinds=None):
        """Expands the grid for a device. modes/dtypes/cells/kinds (if given) override the
        blocks' modes and dtypes and filter the cells and kinds. Duplicates are dropped,
        order kept."""
        out, seen = [], set()
        for block in self.blocks:
            if kinds and block.kind not in kinds:
                continue
            block_dtypes = dtypes or (
                block.cpu_dtypes if device == "cpu" and block.cpu_dtypes else block.dtypes)
            note = block.note
            if device == "cpu" and block.cpu_dtypes and not dtypes:
                note += f" ({'/'.join(block.dtypes)} on GPU; {'/'.join(block.cpu_dtypes)} on CPU)"
            for cell, dtype, shape in itertools.product(
                    block.cells, block_dtypes, block.shapes):
                if cells and cell not in cells:
                    continue
                for mode in (modes or block.modes):
                    if shape.inference_only and mode != "fwd":
                        continue
                    training = mode == "fwdbwd"
                    case = Case(cell, dtype, shape.T, shape.B, shape.I, shape.H, shape.layers,
                                shape.bidirectional, mode, kind=block.kind, hx=block.hx,
                                loss=block.loss if training else "output",
                                packed=block.packed,
                                dropout=block.dropout if training else 0.0,
                                autocast=block.autocast, note=note.strip(),
                                max_rounds=block.max_rounds)
                    if case.key() not in seen:
                        seen.add(case.key())
                        out.append(case)
        return out


def custom_cases(cells, dtypes, Ts, Bs, Is, Hs, layers, bidirectional, modes,
                 kinds=("layer",), hx=False):
    """The product of the given lists; Is=None means I = H for each H; a case of kind cell
    is one call (T = 1 whatever Ts say)."""
    out = []
    for kind, cell, dtype, T, B, H, L, mode in itertools.product(
            kinds, cells, dtypes, Ts, Bs, Hs, layers, modes):
        for I in (Is or (H,)):
            case = Case(cell, dtype, 1 if kind == "cell" else T, B, I, H, L, bidirectional,
                        mode, kind=kind, hx=hx)
            if case not in out:
                out.append(case)
    return out
