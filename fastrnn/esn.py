"""Echo state networks (Jaeger, 2001): a fixed random reservoir of leaky tanh units and a
linear readout fitted in closed form.

    x_t = (1 - a) * x_{t-1} + a * tanh(W_in u_t + b + W x_{t-1})      the reservoir
    y_t = W_out [x_t] + b_out   (or W_out [u_t; x_t] + b_out)          the readout

The reservoir runs fastrnn's leaky recurrence (csrc/cells/leaky.h), forward only: nothing in
it is trained. On the CPU a sparse W runs in the sparse walk, reading only its nonzeros.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ._input_product import input_product
from ._ops import ops
from .modules import _OwnRecurrence

# When the sparse walk runs (CPU): the fraction f of W's entries that are nonzero at most
# _CSR_MAX_DENSITY and, with B rows per step, B * f at most _CSR_MAX_ROW_DENSITY; else the
# dense walk. Measured, 2000 units, float32, 2 threads, AMD EPYC, ms per step, CSR vs
# dense: f = 0.1: B=1 0.056 vs 0.126, B=4 0.222 vs 0.218, B=8 0.604 vs 0.414, B=16 1.16 vs
# 0.74; f = 0.05: B=8 0.367 vs 0.388; f = 0.2: B=1 0.103 vs 0.128, B=2 0.190 vs 0.161;
# f = 0.3: B=1 0.135 vs 0.121; f = 0.5: B=1 0.218 vs 0.126. The sparse walk's cost grows
# with B * f; the dense product's much more slowly with B.
_CSR_MAX_DENSITY = 0.2
_CSR_MAX_ROW_DENSITY = 0.4

def reservoir_weights(input_size, reservoir_size, *, spectral_radius=1.0, density=0.1,
                      input_scaling=1.0, input_density=0.1, bias_scaling=0.0, generator=None):
    """A random reservoir, as ReservoirPy draws one, in float64 on the CPU:
    W [R, R]: each entry nonzero with probability `density`, standard normal, then scaled to
    the given spectral radius (its largest eigenvalue's modulus); W_in [R, I]: each entry
    nonzero with probability `input_density`, +-input_scaling with equal odds; b [R]:
    +-bias_scaling. Returns (w_in, w, b)."""
    def draw(*shape):
        return torch.rand(*shape, dtype=torch.float64, generator=generator)

    def signs(*shape):
        return torch.where(draw(*shape) < 0.5, -1.0, 1.0).to(torch.float64)

    r = reservoir_size
    mask = draw(r, r) < density
    w = torch.randn(r, r, dtype=torch.float64, generator=generator) * mask
    radius = torch.linalg.eigvals(w).abs().max().item()
    if radius == 0.0:
        raise ValueError(
            f"the random reservoir W has spectral radius 0 (density={density} left too few "
            "nonzeros to scale); raise density or reservoir_size")
    w *= spectral_radius / radius
    w_in = signs(r, input_size) * (draw(r, input_size) < input_density) * input_scaling
    return w_in, w, signs(r) * bias_scaling


def _check_range(name, value, low, high, low_open=True):
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")


class Reservoir(_OwnRecurrence, nn.RNN):
    """The reservoir of an echo state network: a one-layer Elman RNN whose units leak,
    x_t = (1 - a) x_{t-1} + a tanh(x_t W_ih^T + b_ih + b_hh + x_{t-1} W_hh^T), with a per-unit
    leak rate a in (0, 1] (the buffer `leak_rate`, [hidden_size]). Its weights are
    torch.nn.RNN's (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`), drawn by
    reservoir_weights and frozen (requires_grad False; b_hh is zero). Input and states as
    torch.nn.RNN's: [T, B, I] (batch_first: [B, T, I]), unbatched [T, I], PackedSequence;
    h_0/h_n [1, B, H] ([1, H] unbatched). Forward only: the ops have no gradient. Under
    autocast it computes in the parameters' dtype; no ONNX export.
    torch.compile(fullgraph=True) traces it with torch._dynamo.config.allow_rnn, as the
    layers (dense weights there: the sparse walk's nonzero count is data)."""

    def __init__(self, input_size, hidden_size, *, leak_rate=1.0, spectral_radius=1.0,
                 density=0.1, input_scaling=1.0, input_density=0.1, bias_scaling=0.0,
                 batch_first=False, seed=None, device=None, dtype=None):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        _check_range("spectral_radius", spectral_radius, 0.0, 1e300)
        _check_range("density", density, 0.0, 1.0)
        _check_range("input_density", input_density, 0.0, 1.0)
        super().__init__(input_size, hidden_size, batch_first=batch_first, device=device,
                         dtype=dtype)
        leak = torch.as_tensor(leak_rate, dtype=torch.float64)
        if leak.dim() > 1 or leak.numel() not in (1, hidden_size):
            raise ValueError(f"leak_rate must be a float or {hidden_size} values, got shape "
                             f"{tuple(leak.shape)}")
        leak = leak.expand(hidden_size)
        if not bool(((leak > 0) & (leak <= 1)).all()):
            raise ValueError(f"leak_rate must lie in (0, 1] for every unit, got {leak_rate}")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        w_in, w, b = reservoir_weights(
            input_size, hidden_size, spectral_radius=spectral_radius, density=density,
            input_scaling=input_scaling, input_density=input_density,
            bias_scaling=bias_scaling, generator=generator)
        with torch.no_grad():
            for param, value in zip(self._flat_weights, (w_in, w, b, torch.zeros_like(b))):
                param.copy_(value)
                param.requires_grad_(False)
        self.register_buffer("leak_rate", leak.to(self.weight_hh_l0).clone())
        self._csr = None  # (key, density, parts) of weight_hh_l0 (_csr_parts), when first used

    def _own_recurrence(self, data, batch_sizes, h0, weights):
        """data: [N, I]; h0: [B, H]. Returns y [N, H], h_n [B, H]."""
        w_ih, w_hh, b_ih, b_hh = weights
        gx = input_product(data, w_ih, b_ih + b_hh)
        if self._use_csr(w_hh, batch_sizes):
            return ops.leaky_forward_csr(gx, batch_sizes, h0, *self._csr_parts(w_hh)[1],
                                         self.leak_rate, False)
        return ops.leaky_forward(gx, batch_sizes, h0, w_hh, self.leak_rate, False)

    def _use_csr(self, w_hh, batch_sizes):
        """Whether to run the sparse walk (see _CSR_MAX_DENSITY). Not while compiling: the
        nonzero count is data."""
        if w_hh.device.type != "cpu" or torch.compiler.is_compiling():
            return False
        density = self._csr_parts(w_hh)[0]
        rows = int(batch_sizes[0])
        return density <= _CSR_MAX_DENSITY and rows * density <= _CSR_MAX_ROW_DENSITY

    def _csr_parts(self, w_hh):
        """(fraction of nonzeros, (crow, col, values)) of w_hh with int32 indices; the parts
        are None when the fraction is above _CSR_MAX_DENSITY. Kept while the parameter
        itself is unchanged (its version counter: a change through `.data`, which torch does
        not count, needs `self._csr = None`); a parametrized weight is new at every call."""
        own = w_hh is self._parameters.get("weight_hh_l0")
        key = (w_hh.data_ptr(), w_hh._version, w_hh.dtype) if own else None
        if key is None or self._csr is None or self._csr[0] != key:
            density = int(torch.count_nonzero(w_hh)) / max(1, w_hh.numel())
            parts = None
            if density <= _CSR_MAX_DENSITY:
                rows, cols = w_hh.detach().nonzero().t().int()  # row-major order
                counts = torch.bincount(rows, minlength=w_hh.shape[0])
                crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).int()
                parts = (crow, cols, w_hh.detach()[rows, cols])
            self._csr = (key, density, parts)
        return self._csr[1:]

    def _apply(self, fn, recurse=True):
        self._csr = None  # the parameters may move or change dtype
        return super()._apply(fn, recurse)


class EchoStateNetwork(nn.Module):
    """An echo state network: a Reservoir (its arguments as there) and a linear `readout`
    (torch.nn.Linear) from the features [x_t] ([u_t; x_t] with readout_input) to
    output_size values, fitted by ridge regression (fit) with the intercept not penalised,
    after dropping each sequence's first `washout` steps.

    forward(input, hx) -> (output, h_n): input and hx as Reservoir's; output [T, B, O] in
    the input's layout (a PackedSequence for one). generate(input, steps, hx) runs closed
    loop: each prediction is the next input (output_size == input_size)."""

    def __init__(self, input_size, reservoir_size, output_size, *, leak_rate=1.0,
                 spectral_radius=1.0, density=0.1, input_scaling=1.0, input_density=0.1,
                 bias_scaling=0.0, ridge=0.0, washout=0, readout_input=False,
                 batch_first=False, seed=None, device=None, dtype=None):
        super().__init__()
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size <= 0:
            raise ValueError(f"output_size must be a positive int, got {output_size!r}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        if isinstance(washout, bool) or not isinstance(washout, int) or washout < 0:
            raise ValueError(f"washout must be a non-negative int, got {washout!r}")
        self.reservoir = Reservoir(
            input_size, reservoir_size, leak_rate=leak_rate, spectral_radius=spectral_radius,
            density=density, input_scaling=input_scaling, input_density=input_density,
            bias_scaling=bias_scaling, batch_first=batch_first, seed=seed, device=device,
            dtype=dtype)
        self.ridge, self.washout, self.readout_input = float(ridge), washout, readout_input
        features = reservoir_size + (input_size if readout_input else 0)
        self.readout = nn.Linear(features, output_size, device=device, dtype=dtype)
        with torch.no_grad():
            self.readout.weight.zero_()
            self.readout.bias.zero_()

    def _features(self, input, states):
        """The readout's input: states, or [input; states], in the input's layout."""
        if not self.readout_input:
            return states
        if isinstance(input, PackedSequence):
            return states._replace(data=torch.cat([input.data, states.data], -1))
        return torch.cat([input, states], -1)

    def forward(self, input, hx=None):
        states, h_n = self.reservoir(input, hx)
        features = self._features(input, states)
        if isinstance(features, PackedSequence):
            return features._replace(data=self.readout(features.data)), h_n
        return self.readout(features), h_n

    @torch.no_grad()
    def fit(self, input, target, hx=None):
        """Runs the reservoir over input and fits the readout to target (the same layout as
        input, output_size features). Returns self."""
        self._check_target(input, target)
        states, _ = self.reservoir(input, hx)
        features = self._kept_rows(self._features(input, states))
        targets = self._kept_rows(target)
        if features.shape[0] == 0:
            raise ValueError(f"no step is left to fit after a washout of {self.washout}")
        weight, bias = ridge_regression(features, targets, self.ridge)
        self.readout.weight.copy_(weight)
        self.readout.bias.copy_(bias)
        return self

    def _check_target(self, input, target):
        """target: input's layout and steps, output_size features (a PackedSequence exactly
        when input is one, with the same steps and order)."""
        packed = isinstance(input, PackedSequence)
        if packed != isinstance(target, PackedSequence):
            raise ValueError("target must be a PackedSequence exactly when input is one")
        if packed:
            same = (torch.equal(input.batch_sizes, target.batch_sizes)
                    and _same_indices(input.sorted_indices, target.sorted_indices))
            shape, want = target.data.shape, (input.data.shape[0], self.readout.out_features)
        else:
            same = True
            shape, want = target.shape, (*input.shape[:-1], self.readout.out_features)
        if not same or tuple(shape) != tuple(want):
            raise ValueError(f"target must have the input's steps and batch and "
                             f"{self.readout.out_features} features: want {tuple(want)}"
                             f"{' and the same packing' if packed else ''}, got {tuple(shape)}")

    def _kept_rows(self, seq):
        """The rows of every step from `washout` on: [n, features]."""
        if isinstance(seq, PackedSequence):
            return seq.data[int(seq.batch_sizes[:self.washout].sum()):]
        if seq.dim() == 2:  # unbatched [T, F]
            return seq[self.washout:]
        if self.reservoir.batch_first:
            seq = seq.transpose(0, 1)
        return seq[self.washout:].reshape(-1, seq.shape[-1])

    @torch.no_grad()
    def generate(self, input, steps, hx=None):
        """Closed loop: runs the reservoir over input (a warm-up of at least one step,
        teacher forced), then `steps` times feeds its last prediction back as the next
        input. Returns the steps predictions [steps, B, O] (the input's layout) and h_n."""
        if isinstance(input, PackedSequence):
            raise ValueError("generate takes a dense warm-up input, not a PackedSequence")
        if self.readout.out_features != self.reservoir.input_size:
            raise ValueError(
                f"generate feeds predictions back as input: output_size "
                f"({self.readout.out_features}) must equal input_size "
                f"({self.reservoir.input_size})")
        time_dim = 1 if self.reservoir.batch_first and input.dim() == 3 else 0
        output, h = self(input, hx)
        step = output.narrow(time_dim, output.shape[time_dim] - 1, 1)
        predictions = []
        for _ in range(steps):
            predictions.append(step)
            step, h = self(step, h)
        if not predictions:
            return output.narrow(time_dim, 0, 0), h
        return torch.cat(predictions, time_dim), h


def ridge_regression(features, targets, ridge):
    """The W, b minimising |features W^T + b - targets|^2 + ridge |W|^2 (b not penalised),
    in float64 on the CPU: features [n, F], targets [n, O]; returns W [O, F], b [O] there.
    With ridge 0 the least-norm solution (a reservoir's unreached units give zero columns)."""
    x, y = features.detach().cpu().double(), targets.detach().cpu().double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    x, y = x - x_mean, y - y_mean
    gram, rhs = x.t() @ x, x.t() @ y
    if ridge > 0:
        weight = torch.linalg.solve(gram + ridge * torch.eye(x.shape[1], dtype=x.dtype), rhs)
    else:
        weight = torch.linalg.lstsq(gram, rhs, driver="gelsd").solution  # [F, O]
    return weight.t(), y_mean - x_mean @ weight


def _same_indices(a, b):
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


# A model saved whole loads under torch.load's defaults (weights_only) as the layers do.
torch.serialization.add_safe_globals([Reservoir, EchoStateNetwork])
