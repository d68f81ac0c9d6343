"""Benchmark cases and the named grids (quick, core, anchors, full), plus custom grids.

A Case is one measurement: a cell, a dtype, a shape and a mode ("fwd": inference under
torch.no_grad; "fwdbwd": forward plus backward). A Grid is a list of Blocks, each a product
of cells x dtypes x shapes x modes; Grid.cases() expands it for a device.

Half-precision on the CPU: the "anchors" grid's bf16/fp16 LSTM (B=16, T=1024, H=768) is run
in float32 on the CPU (Block.cpu_dtypes), because torch.nn has no fast half-precision CPU
path to compare against; the case's "note" says so. An explicit --dtype is always obeyed.
"""

import itertools
from dataclasses import dataclass, field

CELLS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
MODES = ("fwd", "fwdbwd")
KEY_FIELDS = ("cell", "dtype", "T", "B", "I", "H", "layers", "bidirectional", "mode")

_CELL_ALIASES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH", "rnn_tanh": "RNN_TANH",
                 "tanh": "RNN_TANH", "rnn_relu": "RNN_RELU", "relu": "RNN_RELU"}
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
    """'lstm', 'RNN', 'rnn_relu', ... -> one of CELLS (RNN means RNN_TANH)."""
    return _parse(_CELL_ALIASES, name, "cell", "one of LSTM, GRU, RNN, RNN_TANH, RNN_RELU")


def parse_dtype(name):
    """'fp32', 'bf16', 'half', ... -> the torch dtype's name (float32, bfloat16, ...)."""
    return _parse(_DTYPE_ALIASES, name, "dtype", "float32, float64, bfloat16 or float16")


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
    note: str = field(default="", compare=False)

    def key(self):
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    def label(self):
        extra = (f" L{self.layers}" if self.layers != 1 else "") + (
            " bi" if self.bidirectional else "")
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
    """cells x dtypes x shapes x modes; cpu_dtypes (if set) replace dtypes on the CPU."""
    cells: tuple
    dtypes: tuple
    shapes: tuple
    modes: tuple = MODES
    cpu_dtypes: tuple = None
    note: str = ""


@dataclass(frozen=True)
class Grid:
    """A named list of blocks; threads is the grid's default torch thread count (or None)."""
    name: str
    description: str
    blocks: tuple
    threads: int = None

    def cases(self, device="cpu", modes=None, dtypes=None, cells=None):
        """Expands the grid for a device. modes/dtypes/cells (if given) override the
        blocks' modes and dtypes and filter the cells. Duplicates are dropped, order kept."""
        out, seen = [], set()
        for block in self.blocks:
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
                    case = Case(cell, dtype, shape.T, shape.B, shape.I, shape.H, shape.layers,
                                shape.bidirectional, mode, note.strip())
                    if case.key() not in seen:
                        seen.add(case.key())
                        out.append(case)
        return out


def _square(T, batches, hiddens, **kw):
    """Shapes with I = H for every (B, H) pair, at sequence length T."""
    return tuple(Shape(T, b, h, h, **kw) for h in hiddens for b in batches)


CORE_SHAPES = tuple(Shape(*s) for s in [(100, 64, 512, 512), (100, 32, 128, 128),
                                         (50, 8, 64, 64), (200, 1, 256, 256),
                                         (25, 256, 256, 256)])

GRIDS = {
    "quick": Grid("quick", "small LSTM/GRU/RNN float32 shapes, fwd and fwdbwd (minutes on a "
                  "2-core CPU)", (
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), _square(50, (1, 16, 64), (64, 256))),
    )),
    "core": Grid("core", "the CPU speed grid of the README: LSTM/GRU/RNN(tanh), float32, fwdbwd, 2 threads", (
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), CORE_SHAPES, modes=("fwdbwd",)),
    ), threads=2),
    "anchors": Grid("anchors", "shapes others publish (PyTorch fastrnns, half-precision LSTM, "
                    "haste sweep, batch-1 inference)", (
        Block(("LSTM",), ("float32",), (Shape(100, 64, 512, 512),),
              note="PyTorch fastrnns default"),
        Block(("LSTM",), ("bfloat16", "float16"), (Shape(1024, 16, 768, 768),),
              cpu_dtypes=("float32",), note="half-precision LSTM anchor"),
        Block(("LSTM",), ("float32",), _square(50, (1, 16, 32, 64, 128),
                                               (128, 256, 512, 1024, 2048)),
              note="haste sweep"),
        Block(("LSTM", "GRU"), ("float32",),
              _square(100, (1,), (256, 512, 1024), inference_only=True),
              modes=("fwd",), note="batch-1 inference"),
    )),
    "gpu": Grid("gpu", "every cell, float32/bfloat16/float16, T=100, B in {1, 8, 16, 64}, "
                "H = I in {256, 512, 1024}, fwd and fwdbwd (for GPUs)", (
        Block(CELLS, ("float32", "bfloat16", "float16"),
              _square(100, (1, 8, 16, 64), (256, 512, 1024)), cpu_dtypes=("float32",)),
    )),
    "full": Grid("full", "all cells, T in {50, 200}, B in {1, 8, 32, 128}, H = I in "
                 "{64 .. 1024}, plus 2-layer and bidirectional; half precision on GPU", (
        Block(CELLS, ("float32", "bfloat16", "float16"),
              _square(50, (1, 8, 32, 128), (64, 128, 256, 512, 1024))
              + _square(200, (1, 8, 32, 128), (64, 128, 256, 512, 1024)),
              cpu_dtypes=("float32",)),
        Block(("LSTM", "GRU"), ("float32",),
              (Shape(100, 32, 256, 256, layers=2), Shape(100, 32, 256, 256, bidirectional=True),
               Shape(100, 32, 256, 256, layers=2, bidirectional=True))),
    )),
}


def custom_cases(cells, dtypes, Ts, Bs, Is, Hs, layers, bidirectional, modes):
    """The product of the given lists; Is=None means I = H for each H."""
    out = []
    for cell, dtype, T, B, H, L, mode in itertools.product(
            cells, dtypes, Ts, Bs, Hs, layers, modes):
        for I in (Is or (H,)):
            case = Case(cell, dtype, T, B, I, H, L, bidirectional, mode)
            if case not in out:
                out.append(case)
    return out
