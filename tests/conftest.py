"""Shared helpers: module pairs (torch.nn and fastrnn with the same weights), inputs in every
layout, a loss that reaches every gradient path, and comparison with per-dtype tolerances."""

import dataclasses
import itertools
import os
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastrnn  # noqa: E402
from fastrnn import reference  # noqa: E402

# Small sizes keep the whole parity matrix fast.
T, B, INPUT, HIDDEN, PROJ = 5, 4, 4, 5, 3
LENGTHS_SORTED = [5, 3, 3, 1]  # different lengths, a repeated one and a length-1 sequence
LENGTHS_UNSORTED = [3, 1, 5, 2]

TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}

# Device parameters: CUDA cases are collected everywhere and skipped without a GPU.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

# name -> (torch.nn class, fastrnn class, constructor kwargs)
CELLS = {
    "LSTM": (nn.LSTM, fastrnn.LSTM, {}),
    "LSTM-proj": (nn.LSTM, fastrnn.LSTM, {"proj_size": PROJ}),
    "GRU": (nn.GRU, fastrnn.GRU, {}),
    "RNN-tanh": (nn.RNN, fastrnn.RNN, {"nonlinearity": "tanh"}),
    "RNN-relu": (nn.RNN, fastrnn.RNN, {"nonlinearity": "relu"}),
}
KINDS = ("dense", "packed_sorted", "packed_unsorted", "unbatched")


@dataclasses.dataclass(frozen=True)
class Case:
    cell: str = "LSTM"
    bias: bool = True
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    kind: str = "dense"
    hx: bool = True
    dropout: float = 0.0
    input_size: int = INPUT
    hidden_size: int = HIDDEN
    steps: int = T
    batch: int = B
    lengths: tuple = None  # packed kinds: per-sequence lengths (default by kind)
    proj_size: int = None  # LSTM-proj: overrides PROJ

    @property
    def id(self):
        return "-".join([
            self.cell, "bias" if self.bias else "nobias", f"L{self.layers}",
            "bi" if self.bidirectional else "uni",
            "batch_first" if self.batch_first else "time_first", self.kind,
            "hx" if self.hx else "nohx"])

    @property
    def is_lstm(self):
        return self.cell.startswith("LSTM")

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def out_size(self):  # P: what h carries
        return self.kwargs().get("proj_size", 0) or self.hidden_size

    def kwargs(self):
        """The cell's own constructor arguments (proj_size, nonlinearity)."""
        extra = dict(CELLS[self.cell][2])
        if "proj_size" in extra and self.proj_size is not None:
            extra["proj_size"] = self.proj_size
        return extra

    def seq_lengths(self):
        if self.lengths is not None:
            return list(self.lengths)
        if self.kind == "packed_sorted":
            return LENGTHS_SORTED
        if self.kind == "packed_unsorted":
            return LENGTHS_UNSORTED
        return [self.steps] * self.batch


def full_matrix():
    """Every cell x bias x layers 1-3 x direction x batch_first x input kind x hx."""
    return [Case(cell, bias, layers, bi, bf, kind, hx)
            for cell, bias, layers, bi, bf, kind, hx in itertools.product(
                CELLS, (True, False), (1, 2, 3), (False, True), (False, True), KINDS,
                (True, False))]


def ids(cases):
    return [case.id for case in cases]


# --- modules -------------------------------------------------------------------------------


def module_kwargs(case, dtype):
    extra = case.kwargs()
    return dict(input_size=case.input_size, hidden_size=case.hidden_size,
                num_layers=case.layers, bias=case.bias, batch_first=case.batch_first,
                dropout=case.dropout, bidirectional=case.bidirectional, dtype=dtype, **extra)


def make_pair(case, dtype=torch.float64, seed=0, device="cpu"):
    """A fresh torch.nn module and a fastrnn module loaded with its state_dict, on device
    (initialised on the CPU, so every device gets the same weights)."""
    torch_cls, fast_cls, _ = CELLS[case.cell]
    torch.manual_seed(seed)
    ref = torch_cls(**module_kwargs(case, dtype))
    fast = fast_cls(**module_kwargs(case, dtype))
    fast.load_state_dict(ref.state_dict())
    return ref.to(device), fast.to(device)


# --- inputs --------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """Leaf tensors (x and the hx parts) and how to assemble the module's arguments."""

    case: Case
    x: torch.Tensor  # dense: [T, B, I] / [B, T, I]; unbatched: [T, I]; packed: padded
    h0: torch.Tensor = None  # [L*D, B, P] (unbatched: [L*D, P]) or None
    c0: torch.Tensor = None  # [L*D, B, H] (unbatched: [L*D, H]) or None

    def leaves(self):
        return [t for t in (self.x, self.h0, self.c0) if t is not None]

    def fresh(self, requires_grad=True):
        """Copies of the leaves, detached, so each module gets its own gradients."""
        copy = lambda t: None if t is None else t.detach().clone().requires_grad_(
            requires_grad)
        return Inputs(self.case, copy(self.x), copy(self.h0), copy(self.c0))

    def to(self, device=None, dtype=None):
        """The same values on another device and/or in another dtype."""
        move = lambda t: None if t is None else t.detach().to(device=device, dtype=dtype)
        return Inputs(self.case, move(self.x), move(self.h0), move(self.c0))

    def args(self):
        """(input, hx) for module(input, hx); input is a PackedSequence for packed kinds."""
        case = self.case
        if case.kind.startswith("packed"):
            inp = pack_padded_sequence(self.x, torch.tensor(case.seq_lengths()),
                                       batch_first=case.batch_first,
                                       enforce_sorted=case.kind == "packed_sorted")
        else:
            inp = self.x
        if self.h0 is None:
            return inp, None
        return inp, ((self.h0, self.c0) if case.is_lstm else self.h0)


def make_inputs(case, dtype=torch.float64, seed=1, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)
    if case.kind == "unbatched":
        x = rand(case.steps, case.input_size)
        state_batch = ()
    else:
        steps = max(case.seq_lengths()) if case.kind.startswith("packed") else case.steps
        shape = (case.batch, steps) if case.batch_first else (steps, case.batch)
        x = rand(*shape, case.input_size)
        state_batch = (case.batch,)
    h0 = c0 = None
    if case.hx:
        h0 = rand(case.layers * case.directions, *state_batch, case.out_size)
        if case.is_lstm:
            c0 = rand(case.layers * case.directions, *state_batch, case.hidden_size)
    return Inputs(case, x, h0, c0).to(device)


# --- running and comparing -----------------------------------------------------------------


def flatten_result(result):
    """module(...)'s (output, hidden) as a list of tensors: output (packed: its data),
    h_n and, for LSTM, c_n."""
    output, hidden = result
    if isinstance(output, PackedSequence):
        output = output.data
    hidden = list(hidden) if isinstance(hidden, tuple) else [hidden]
    return [output] + hidden


def weighted_loss(tensors, seed=2):
    """sum_k <w_k, tensors_k> with fixed random weights w_k: every element of every output
    gets its own gradient (unlike .sum())."""
    gen = torch.Generator().manual_seed(seed)
    total = 0
    for t in tensors:
        w = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)
        total = total + (t * w).sum()
    return total


def run(module, inputs, backward=True):
    """Forward (and backward through weighted_loss) on fresh copies of the inputs.

    Returns (results, grads, result): results as flatten_result; grads a dict name ->
    gradient for 'x', 'h0', 'c0' and every parameter; result module's raw return value.
    """
    inputs = inputs.fresh(requires_grad=backward)
    result = module(*inputs.args())
    outs = flatten_result(result)
    grads = {}
    if backward:
        names = [n for n in ("x", "h0", "c0") if getattr(inputs, n) is not None]
        params = dict(module.named_parameters())
        wrt = [getattr(inputs, n) for n in names] + list(params.values())
        values = torch.autograd.grad(weighted_loss(outs), wrt)
        grads = dict(zip(names + list(params), values))
    return outs, grads, result


def tolerance(dtype):
    return TOLERANCE[dtype]


def assert_close(actual, expected, dtype=None, msg="", tol=None):
    dtype = dtype or expected.dtype
    tol = tolerance(dtype) if tol is None else tol
    assert actual.shape == expected.shape, f"{msg}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{msg}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol,
                               msg=lambda m: f"{msg}: {m}")


def assert_results_close(got, want, dtype, what="fastrnn vs torch.nn"):
    """got/want: (outs, grads) pairs from run()."""
    (outs_got, grads_got), (outs_want, grads_want) = got, want
    assert len(outs_got) == len(outs_want)
    for k, (a, b) in enumerate(zip(outs_got, outs_want)):
        assert_close(a, b, dtype, f"{what}: result {['output', 'h_n', 'c_n'][k]}")
    assert list(grads_got) == list(grads_want), "gradients for different tensors"
    for name in grads_want:
        assert_close(grads_got[name], grads_want[name], dtype, f"{what}: grad of {name}")


def assert_same_packing(result_got, result_want):
    out_got, out_want = result_got[0], result_want[0]
    assert isinstance(out_got, PackedSequence) == isinstance(out_want, PackedSequence)
    if isinstance(out_want, PackedSequence):
        assert torch.equal(out_got.batch_sizes, out_want.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out_got, attr), getattr(out_want, attr)
            assert (a is None and b is None) or torch.equal(a, b), attr


# --- the reference (fastrnn/reference.py) applied to a module's inputs ----------------------


class ReferenceModule:
    """Runs reference.rnn with a torch.nn/fastrnn module's weights and configuration,
    accepting the same (input, hx) as the module. Only the layout handling (batch_first,
    packing, unbatched) is done here, with torch's own packing utilities."""

    def __init__(self, module):
        self.m = module

    def named_parameters(self):
        return self.m.named_parameters()

    def __call__(self, inp, hx=None):
        m = self.m
        is_lstm = m.mode == "LSTM"
        packed = isinstance(inp, PackedSequence)
        unbatched = not packed and inp.dim() == 2
        if packed:
            data, batch_sizes = inp.data, inp.batch_sizes
            batch = int(batch_sizes[0])
        else:
            x = inp.unsqueeze(1) if unbatched else (inp.transpose(0, 1) if m.batch_first
                                                     else inp)  # [T, B, I]
            steps, batch = x.shape[:2]
            data, batch_sizes = x.reshape(steps * batch, -1), [batch] * steps
        states = m.num_layers * (2 if m.bidirectional else 1)
        p = m.proj_size or m.hidden_size
        if hx is None:
            zeros = lambda size: data.new_zeros(states, batch, size)
            h0, c0 = zeros(p), (zeros(m.hidden_size) if is_lstm else None)
        else:
            h0, c0 = hx if is_lstm else (hx, None)
            if unbatched:
                h0, c0 = h0.unsqueeze(1), None if c0 is None else c0.unsqueeze(1)
            if packed and inp.sorted_indices is not None:
                h0 = h0.index_select(1, inp.sorted_indices)
                c0 = None if c0 is None else c0.index_select(1, inp.sorted_indices)
        out, h_n, c_n = reference.rnn(
            m.mode, data, batch_sizes, h0, c0, m._flat_weights, has_bias=m.bias,
            num_layers=m.num_layers, bidirectional=m.bidirectional, proj_size=m.proj_size,
            dropout=m.dropout, training=m.training)
        if packed:
            if inp.unsorted_indices is not None:
                h_n = h_n.index_select(1, inp.unsorted_indices)
                c_n = None if c_n is None else c_n.index_select(1, inp.unsorted_indices)
            output = PackedSequence(out, inp.batch_sizes, inp.sorted_indices,
                                    inp.unsorted_indices)
        else:
            output = out.view(steps, batch, -1)
            if unbatched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = None if c_n is None else c_n.squeeze(1)
            elif m.batch_first:
                output = output.transpose(0, 1)
        return output, ((h_n, c_n) if is_lstm else h_n)


@pytest.fixture
def torch_state():
    """Seeded RNG, and a single intra-op thread for the test's duration (restored after).

    The tiny cases never reach fastrnn's parallel grain, and on a loaded 2-core machine
    idle OpenMP threads spinning in torch's own small GEMMs cost more than the work; tests
    that need the parallel paths ask for `multithreaded`. The fastrnn test files use this
    fixture through `pytestmark`, so other test files keep torch's defaults."""
    before = torch.get_num_threads()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    # float32 on CUDA means float32: no TF32 in cuBLAS (fastrnn's GEMMs) or cuDNN (torch.nn).
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(before)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture
def multithreaded(torch_state):
    """Runs the test with 2 intra-op threads (parallel_for splits even on one core)."""
    torch.set_num_threads(2)
    yield
