"""Inputs for a Case in every layout: dense (time or batch first), packed (sorted or not)
and unbatched, with or without hx. Fresh random values, never zeros."""

import dataclasses

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from helpers.cases import Case


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
        return type(self)(self.case, copy(self.x), copy(self.h0), copy(self.c0))

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
