"""The reference (helpers/reference.py) applied to a module's inputs."""

import torch
import torch._dynamo
from torch.nn.utils.rnn import PackedSequence

from helpers import reference
from helpers.compare import assert_results_close, assert_same_packing
from helpers.inputs import make_inputs
from helpers.running import run
from helpers.tolerances import LOW_PRECISION


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
            dropout=m.dropout, training=m.training, variant=_variant(m))
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


def _variant(module):
    """A fastrnn variant module's Variant when it has an option set, else None."""
    if any(getattr(module, name, False) for name in ("peepholes", "coupled_gates", "layer_norm")):
        return module._variant
    return None


def check_against_reference(module, case, dtype, device="cpu"):
    """module on the case's inputs equal to the reference's results (outputs, final states
    and every gradient) within dtype's tolerance."""
    inputs = make_inputs(case, dtype, device=device)
    want_outs, want_grads, want = run(ReferenceModule(module), inputs)
    got_outs, got_grads, got = run(module, inputs)
    assert_same_packing(got, want)
    assert_results_close([got_outs, got_grads], [want_outs, want_grads], dtype,
                         "fastrnn vs the reference")


def check_16_bit_against_float64(exact, low, case, dtype, device="cpu"):
    """low (module in dtype, exact's weights rounded to it) against float64: at most twice
    the error of the reference loop run in dtype on the same representable weights and
    inputs, plus the usual slack. exact: the float64 module, its weights already rounded;
    both on device."""
    inputs = make_inputs(case, dtype, device=device)
    want_outs, want_grads, _ = run(ReferenceModule(exact), inputs.to(dtype=torch.float64))
    ref_outs, ref_grads, _ = run(ReferenceModule(low), inputs)
    got_outs, got_grads, _ = run(low, inputs)
    pairs = list(zip(got_outs, ref_outs, want_outs)) + [
        (got_grads[n], ref_grads[n], want_grads[n]) for n in want_grads]
    for got, ref, want in pairs:
        assert got.dtype == dtype
        got_error = (got.double() - want).abs().max().item()
        ref_error = (ref.double() - want).abs().max().item()
        slack = LOW_PRECISION["slack"] * max(1.0, want.abs().max().item())
        assert got_error <= LOW_PRECISION["factor"] * ref_error + slack


def check_compiled_equals_eager(module, case):
    """torch.compile(fullgraph=True) of module (a layer stack) gives its eager results and
    gradients in float64."""
    inputs = make_inputs(case)
    want_outs, want_grads, _ = run(module, inputs)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        got_outs, got_grads, _ = run(compiled, inputs)
    torch._dynamo.reset()
    got_grads = {name.removeprefix("_orig_mod."): grad for name, grad in got_grads.items()}
    assert_results_close([got_outs, got_grads], [want_outs, want_grads], torch.float64,
                         "compiled")
