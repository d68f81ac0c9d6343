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

from ._input_product import input_product
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
    it computes in the parameters' dtype. torch.compile(fullgraph=True) traces dense input
    (with torch._dynamo.config.allow_rnn, as the layers); packed input compiles with graph
    breaks, since its rows per module are computed from batch_sizes' values."""

    def __init__(self, input_size, hidden_size, periods=DEFAULT_PERIODS, bias=True,
                 batch_first=False, device=None, dtype=None):
        self.periods = check_periods(periods, hidden_size)
        super().__init__(input_size, hidden_size, bias=bias, batch_first=batch_first,
                         device=device, dtype=dtype)
        with torch.no_grad():
            self.weight_hh_l0.mul_(allowed_blocks(hidden_size, self.periods, device))

    def extra_repr(self):
        return super().extra_repr() + f", periods={self.periods}"

    def _own_recurrence(self, data, batch_sizes, h0, weights, is_packed):
        """data: [N, I]; h0: [B, H]. Module i's input product only for its active steps'
        rows, which the op takes as they are. Returns y [N, H], h_n [B, H]."""
        w_ih, w_hh = weights[0], weights[1]
        bias = weights[2] + weights[3] if self.bias else None
        total = data.shape[0]
        rows = [None if period == 1 else  # a module active at every step reads every row
                _active_rows(batch_sizes, period, total, is_packed).to(data.device)
                for period in self.periods]
        gx = _ModuleInputProducts.apply(data, w_ih, bias, rows)
        return ops.clockwork_forward(list(gx), batch_sizes, h0, w_hh, list(self.periods), total)


class _ModuleInputProducts(torch.autograd.Function):
    """Each module's input-side pre-activations for its active steps' rows only: data
    [N, I], w_ih [H, I], bias [H] or None, rows: per module its rows of data ([n_i] int64),
    or None for every row -> per module [n_i, k], data[rows_i] @ w_ih[i]^T + bias[i].
    Backward forms data's gradient in one tensor: the every-row module's product, the
    others' added at their rows, where autograd's own started the gathered modules' from
    zeros, joined their parts and added the result to the every-row module's
    (benchmarks/clockwork.py's fwd+bwd, T256 B32 I=H=256, in-process interleaved, 7 runs of
    medians of 15 or 31: 3-10% faster in six, 4% slower in one). The parts are products as
    input_product forms them, whose large shallow results come from reused buffers (the same
    case, 31 rounds in shuffled order, median ms: 26.1 against 27.6 with torch.mm's fresh,
    page-faulting results). It runs with autocast off, in the forward's dtype, also when
    backward() is called inside an autocast region."""

    @staticmethod
    def forward(ctx, data, w_ih, bias, rows):
        k = w_ih.shape[0] // len(rows)
        gathered = [r for r in rows if r is not None]  # one gather for all the others
        others = data.index_select(0, torch.cat(gathered)) if gathered else data[:0]
        xs = _module_inputs(data, others, rows)
        ctx.rows, ctx.has_bias, ctx.device_type = rows, bias is not None, data.device.type
        ctx.save_for_backward(data, w_ih, others)
        return tuple(input_product(x, w_ih[i * k:(i + 1) * k],
                                   None if bias is None else bias[i * k:(i + 1) * k])
                     for i, x in enumerate(xs))

    @staticmethod
    def backward(ctx, *grad_gx):
        with torch.autocast(ctx.device_type, enabled=False):  # in the forward's dtype
            return _ModuleInputProducts._gradients(ctx, grad_gx)

    @staticmethod
    def _gradients(ctx, grad_gx):
        data, w_ih, others = ctx.saved_tensors
        k = w_ih.shape[0] // len(ctx.rows)
        grad_data = grad_w_ih = grad_bias = None
        if ctx.needs_input_grad[0]:
            parts = [input_product(g, w_ih[i * k:(i + 1) * k].t())  # [n_i, I]
                     for i, g in enumerate(grad_gx)]
            first = ctx.rows[0]  # None where the first module's period is 1 (no other's is)
            grad_data = (parts[0] if first is None
                         else torch.zeros_like(data).index_add_(0, first, parts[0]))
            for r, part in zip(ctx.rows[1:], parts[1:]):
                grad_data.index_add_(0, r, part)
        if ctx.needs_input_grad[1]:
            xs = _module_inputs(data, others, ctx.rows)
            grad_w_ih = torch.cat([g.t() @ x for g, x in zip(grad_gx, xs)])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = torch.cat([g.sum(0) for g in grad_gx])
        return grad_data, grad_w_ih, grad_bias, None


def _module_inputs(data, others, rows):
    """Each module's input rows, [n_i, I]: data itself where rows[i] is None, else its part
    of others (the gathered rows of every other module, in module order)."""
    parts = iter(others.split([len(r) for r in rows if r is not None]))
    return [data if r is None else next(parts) for r in rows]


def _active_rows(batch_sizes, period, rows, is_packed):
    """The packed rows of steps 0, period, 2 * period, ...: [n] int64. Dense input (every
    step the same size) from the shapes alone, which torch.compile traces."""
    steps = batch_sizes.shape[0]
    if not is_packed:
        batch = rows // steps
        starts = torch.arange(0, steps, period) * batch
        return (starts[:, None] + torch.arange(batch)).flatten()
    sizes = batch_sizes[::period]
    starts = (torch.cumsum(batch_sizes, 0) - batch_sizes)[::period]
    offsets = torch.arange(int(sizes.sum())) - torch.repeat_interleave(
        torch.cumsum(sizes, 0) - sizes, sizes)
    return torch.repeat_interleave(starts, sizes) + offsets


# A model saved whole loads under torch.load's defaults (weights_only) as the layers do.
torch.serialization.add_safe_globals([ClockworkRNN])
