"""The clockwork RNN (Koutník, Greff, Gomez and Schmidhuber, "A Clockwork RNN", 2014).

The hidden units form g modules of k = hidden_size / g units with periods T_1 < ... < T_g.
At step t (counted from 0 at each sequence's start) module i is active when t % T_i == 0:

    h_t[i] = tanh(x_t W_ih[i]^T + b_ih[i] + b_hh[i] + sum_{j >= i} h_{t-1}[j] W_hh[i, j]^T)
    h_t[i] = h_{t-1}[i]                                  (inactive)

where [i] is module i's k units and W_hh[i, j] the k x k block of rows i, columns j: the
recurrent matrix is block upper-triangular, slow modules feeding fast ones, never the
reverse. Inactive modules cost only a copy of their state: each step computes only the
active modules' rows of both products (cpu/clockwork_fused.h, clockwork_walk.h), so a step
costs less than a full RNN's. CUDA runs the same schedule (cuda/clockwork_cuda.cpp).
"""

import operator

import torch
from torch import nn

from ._ops import ops
from .modules import _OwnRecurrence

DEFAULT_PERIODS = (1, 2, 4, 8)


def check_periods(periods, hidden_size):
    """periods as a tuple of ints: at least one, positive, strictly ascending, their count
    dividing hidden_size; ValueError otherwise."""
    try:
        values = tuple(operator.index(p) for p in periods)
    except TypeError:
        raise ValueError(f"periods must be a sequence of ints, got {periods!r}") from None
    if not values or any(p <= 0 for p in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"periods must be positive and strictly ascending, got {values}")
    if len(values) > 64:
        raise ValueError(f"at most 64 modules (periods), got {len(values)}")
    if hidden_size % len(values):
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of the number of "
                         f"modules ({len(values)} periods)")
    return values


def allowed_blocks(hidden_size, periods, device=None):
    """The mask of W_hh's allowed blocks: [H, H] bool, block (i, j) True when j >= i."""
    modules = torch.arange(hidden_size, device=device) // (hidden_size // len(periods))
    return modules[None, :] >= modules[:, None]


class ClockworkRNN(_OwnRecurrence, nn.RNN):
    """A clockwork RNN layer: torch.nn.RNN's constructor (input_size, hidden_size, bias,
    batch_first, device, dtype; one layer, one direction, tanh) plus `periods`, one per
    module (default 1, 2, 4, 8), ascending, their count dividing hidden_size.

    Parameters are torch.nn.RNN's: weight_ih_l0 [H, I], weight_hh_l0 [H, H], bias_ih_l0,
    bias_hh_l0 [H]. Only W_hh's allowed blocks (block (i, j) with j >= i, see
    allowed_blocks) are read; the others are zero from the start and their gradient is zero.
    Input and states as torch.nn.RNN's: [T, B, I] (batch_first: [B, T, I]), unbatched
    [T, I], PackedSequence; h_0/h_n [1, B, H] ([1, H] unbatched). CPU and CUDA. Under autocast
    it computes in the parameters' dtype. torch.compile(fullgraph=True) traces it (with
    torch._dynamo.config.allow_rnn, as the layers), dense or packed."""

    def __init__(self, input_size, hidden_size, periods=DEFAULT_PERIODS, bias=True,
                 batch_first=False, device=None, dtype=None):
        self.periods = check_periods(periods, hidden_size)
        super().__init__(input_size, hidden_size, bias=bias, batch_first=batch_first,
                         device=device, dtype=dtype)
        with torch.no_grad():
            self.weight_hh_l0.mul_(allowed_blocks(hidden_size, self.periods, device))

    def extra_repr(self):
        return super().extra_repr() + f", periods={self.periods}"

    def _own_recurrence(self, data, batch_sizes, h0, weights):
        """data: [N, I]; h0: [B, H]. The op forms module i's input product only for its
        active steps' rows. Returns y [N, H], h_n [B, H]."""
        bias = weights[2] + weights[3] if self.bias else None
        return ops.clockwork_forward(data, weights[0], bias, batch_sizes, h0, weights[1],
                                     list(self.periods))


# A model saved whole loads under torch.load's defaults (weights_only) as the layers do.
torch.serialization.add_safe_globals([ClockworkRNN])
