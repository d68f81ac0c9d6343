"""fastrnn.DilatedLSTM/GRU/RNN: equal to the definition, h_t = cell(x_t, h_{t-d}), written as a
plain Python loop over torch.nn's cells (float64, 1e-10: outputs, final states and every
gradient), over cell x directions x dense/batch_first/packed/unbatched x hx, with sequences
shorter than a dilation; and equal to fastrnn's own layer run on the explicitly interleaved
subsequences."""

import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fastrnn
from helpers import reference
from helpers.devices import DEVICES
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

INPUT, HIDDEN, PROJ = 3, 4, 2
DILATIONS = (1, 3, 4)  # T = 7 is a multiple of none but 1; 4 leaves short sequences' phases empty
LENGTHS = {"dense": [7, 7, 7], "batch_first": [7, 7, 7], "unbatched": [7],
           "packed_sorted": [7, 5, 2], "packed_unsorted": [2, 7, 3, 1]}
F64 = torch.float64

# name -> (fastrnn class, torch.nn cell class or None (projection), constructor kwargs)
CELLS = {
    "LSTM": (fastrnn.DilatedLSTM, nn.LSTMCell, {}),
    "LSTM-proj": (fastrnn.DilatedLSTM, None, {"proj_size": PROJ}),
    "GRU": (fastrnn.DilatedGRU, nn.GRUCell, {}),
    "RNN-tanh": (fastrnn.DilatedRNN, nn.RNNCell, {"nonlinearity": "tanh"}),
    "RNN-relu": (fastrnn.DilatedRNN, nn.RNNCell, {"nonlinearity": "relu"}),
}


def make(cell, bidirectional, dilations=DILATIONS, **kwargs):
    cls, _, extra = CELLS[cell]
    torch.manual_seed(0)
    return cls(INPUT, HIDDEN, num_layers=len(dilations), bidirectional=bidirectional,
               dilations=dilations, dtype=F64, **extra, **kwargs)


def step_function(cell, module, layer, suffix):
    """(x [1, I], state) -> state for one layer and direction of module, state h or (h, c):
    torch.nn's cell with the layer's parameters (the projection: torch.nn's equations)."""
    _, cell_cls, _ = CELLS[cell]
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    params = {n: getattr(module, f"{n}_l{layer}{suffix}") for n in names}
    if cell_cls is None:
        w_hr = getattr(module, f"weight_hr_l{layer}{suffix}")
        return lambda x, state: reference._cell(
            "LSTM", x, state[0], state[1], params["weight_ih"], params["weight_hh"],
            params.get("bias_ih"), params.get("bias_hh"), w_hr)
    template = cell_cls(INPUT, HIDDEN, bias=module.bias, dtype=F64,
                        **({"nonlinearity": module.nonlinearity} if cell.startswith("RNN")
                           else {}))
    return lambda x, state: functional_call(template, params, (x, state))


def dilated_definition(cell, module, sequences, hx):
    """The stack by its definition, one sequence and one step at a time.

    sequences: per sequence b (the caller's order) [L_b, I]; hx: per layer the initial
    state(s) [D, d * B, *] (entry j * B + b: phase j of sequence b).
    Returns per sequence its output [L_b, D*P], and per layer its final state(s)."""
    batch, directions = len(sequences), 2 if module.bidirectional else 1
    is_lstm = module.mode == "LSTM"
    layer_inputs, final = sequences, []
    for layer, d in enumerate(module.dilations):
        h0, c0 = hx[layer] if is_lstm else (hx[layer], None)
        outputs = [[] for _ in sequences]
        h_n, c_n = h0.clone(), None if c0 is None else c0.clone()
        for direction in range(directions):
            step = step_function(cell, module, layer, "_reverse" if direction else "")
            for b, x in enumerate(layer_inputs):
                index = lambda j: j * batch + b
                state = {j: (h0[direction, index(j)][None], c0[direction, index(j)][None])
                         if is_lstm else h0[direction, index(j)][None] for j in range(d)}
                ys = [None] * len(x)
                times = range(len(x))
                for t in (reversed(times) if direction else times):
                    state[t % d] = step(x[t][None], state[t % d])
                    ys[t] = state[t % d][0] if is_lstm else state[t % d]
                outputs[b].append(torch.cat(ys))
                for j in range(d):
                    h_n = h_n.index_put((torch.tensor(direction), torch.tensor(index(j))),
                                        (state[j][0] if is_lstm else state[j])[0])
                    if is_lstm:
                        c_n = c_n.index_put((torch.tensor(direction), torch.tensor(index(j))),
                                            state[j][1][0])
        layer_inputs = [torch.cat(o, dim=1) for o in outputs]
        final.append((h_n, c_n) if is_lstm else h_n)
    return layer_inputs, final


def initial_states(module, batch, given):
    """hx for module: per layer, random states (leaves) or None for zeros."""
    directions = 2 if module.bidirectional else 1
    out = getattr(module, "proj_size", 0) or HIDDEN
    hx = []
    for d in module.dilations:
        make_state = lambda size: (torch.randn(directions, d * batch, size, dtype=F64)
                                   if given else torch.zeros(directions, d * batch, size,
                                                             dtype=F64))
        hx.append((make_state(out), make_state(HIDDEN)) if module.mode == "LSTM"
                  else make_state(out))
    leaves = [t.requires_grad_(given) for t in itertools.chain.from_iterable(
        s if isinstance(s, tuple) else (s,) for s in hx)]
    return tuple(hx) if given else None, hx, [t for t in leaves if t.requires_grad]


def run_module(module, kind, sequences, hx):
    """module on sequences laid out as kind; per sequence its output, and the final states."""
    if kind.startswith("packed"):
        packed = pack_sequence(sequences, enforce_sorted=kind == "packed_sorted")
        output, final = module(packed, hx)
        padded, lengths = pad_packed_sequence(output)
        return [padded[:n, b] for b, n in enumerate(lengths)], final
    if kind == "unbatched":
        output, final = module(sequences[0], hx)
        return [output], final
    x = torch.stack(sequences, dim=1)  # [T, B, I]
    output, final = module(x.transpose(0, 1) if kind == "batch_first" else x, hx)
    output = output.transpose(0, 1) if kind == "batch_first" else output
    return list(output.unbind(1)), final


def flat(final):
    return [t for s in final for t in (s if isinstance(s, tuple) else (s,))]


@pytest.mark.parametrize("hx_given", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("kind", list(LENGTHS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_equals_definition_with_every_gradient(cell, bidirectional, kind, hx_given):
    module = make(cell, bidirectional, batch_first=kind == "batch_first")
    sequences = [torch.randn(n, INPUT, dtype=F64, requires_grad=True) for n in LENGTHS[kind]]
    hx, states, state_leaves = initial_states(module, len(sequences), hx_given)
    outputs, final = run_module(module, kind, sequences, hx)
    expected_outputs, expected_final = dilated_definition(cell, module, sequences, states)
    results = outputs + flat(final)
    expected = expected_outputs + flat(expected_final)
    for actual, wanted in zip(results, expected, strict=True):
        torch.testing.assert_close(actual, wanted, atol=1e-10, rtol=1e-10)
    leaves = sequences + state_leaves + list(module.parameters())
    weights = [torch.randn_like(t) for t in expected]  # a different weight for each element
    grads = torch.autograd.grad(sum((w * r).sum() for w, r in zip(weights, results)), leaves)
    wanted = torch.autograd.grad(sum((w * e).sum() for w, e in zip(weights, expected)), leaves)
    for name, g, w in zip(range(len(leaves)), grads, wanted):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10, msg=f"gradient {name}")


@pytest.mark.parametrize("steps", [8, 7, 2])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-relu"])
def test_layer_equals_fastrnn_layer_on_interleaved_subsequences(cell, steps):
    """One dilated layer (d = 4) on [T, B] equals fastrnn's plain layer on the T/d-step
    subsequences laid side by side as d*B sequences (packed: the last step has fewer)."""
    d, batch = 4, 3
    dilated = make(cell, bidirectional=True, dilations=(d,))
    cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN-relu": fastrnn.RNN}[cell]
    plain = cls(INPUT, HIDDEN, bidirectional=True, dtype=F64, **CELLS[cell][2])
    plain.load_state_dict(dilated.state_dict())
    x = torch.randn(steps, batch, INPUT, dtype=F64)
    output, final = dilated(x)
    # subsequence j * B + b: rows t = j, j + d, ... of sequence b
    subsequences = [x[j::d, b] for j in range(min(d, steps)) for b in range(batch)]
    packed_output, h_n = plain(pack_sequence(subsequences, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed_output)
    for j, b in itertools.product(range(min(d, steps)), range(batch)):
        torch.testing.assert_close(output[j::d, b], padded[:len(x[j::d]), j * batch + b],
                                   atol=1e-12, rtol=1e-12)
    h_plain = h_n[0] if cell == "LSTM" else h_n
    h_dilated = final[0][0] if cell == "LSTM" else final[0]
    torch.testing.assert_close(h_dilated[:, :len(subsequences)], h_plain, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h_dilated[:, len(subsequences):],
                               torch.zeros_like(h_dilated[:, len(subsequences):]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", list(CELLS))
def test_float32_is_within_tolerance_of_float64(cell, device):
    """The same stack in float32 (packed, unsorted, bidirectional, hx given) within float32's
    bound of its float64 results: output and every layer's final states."""
    module = make(cell, bidirectional=True)
    sequences = [torch.randn(n, INPUT, dtype=F64) for n in LENGTHS["packed_unsorted"]]
    hx, _, _ = initial_states(module, len(sequences), given=True)
    expected_outputs, expected_final = run_module(module, "packed_unsorted", sequences, hx)
    to32 = lambda t: t.detach().to(device, torch.float32)
    hx32 = tuple(tuple(map(to32, s)) if isinstance(s, tuple) else to32(s) for s in hx)
    outputs, final = run_module(module.to(device, torch.float32), "packed_unsorted",
                                [to32(x) for x in sequences], hx32)
    for got, want in zip(outputs + flat(final), expected_outputs + flat(expected_final),
                         strict=True):
        torch.testing.assert_close(got.cpu(), want.float(), **atol_rtol(torch.float32))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-tanh"])
def test_autocast_gives_the_plain_stacks_dtypes(cell):
    """Under CPU bfloat16 autocast: dilations of 1 give fastrnn's plain stack (its dtypes,
    and its values but for the layer outputs rounded to bfloat16 between layers, as each
    layer is autocast on its own), and other dilations the same dtypes."""
    cls, _, extra = CELLS[cell]
    plain_cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN-tanh": fastrnn.RNN}[cell]
    x = torch.randn(7, 3, INPUT)
    plain = plain_cls(INPUT, HIDDEN, num_layers=2, **extra)
    for dilations in ((1, 1), (2, 3)):
        dilated = cls(INPUT, HIDDEN, num_layers=2, dilations=dilations, **extra)
        dilated.load_state_dict(plain.state_dict())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, final = dilated(x)
            expected, hidden = plain(x)
        assert output.dtype == expected.dtype
        h_n = [s[0] if isinstance(s, tuple) else s for s in final]
        expected_h = hidden[0] if isinstance(hidden, tuple) else hidden
        assert {h.dtype for h in h_n} == {expected_h.dtype}
        if dilations == (1, 1):
            bound = atol_rtol(torch.bfloat16, "same_computation")
            torch.testing.assert_close(output, expected, **bound)
            torch.testing.assert_close(torch.cat(h_n), expected_h, **bound)


def test_dilation_one_equals_the_plain_stack():
    module = make("GRU", bidirectional=True, dilations=(1, 1))
    plain = fastrnn.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=F64)
    plain.load_state_dict(module.state_dict())
    x = torch.randn(6, 3, INPUT, dtype=F64)
    output, final = module(x)
    expected, h_n = plain(x)
    torch.testing.assert_close(output, expected, atol=0, rtol=0)
    torch.testing.assert_close(torch.cat(final), h_n, atol=0, rtol=0)


def test_compiles_into_one_graph_for_dense_input():
    """fullgraph, and new lengths and batches reuse the graph (dynamic=True)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend
    module = make("LSTM", bidirectional=True)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(module, backend=counter, fullgraph=True, dynamic=True)
        for call, (steps, batch) in enumerate(((7, 5), (9, 6), (5, 8))):  # 5: no feature size
            x = torch.randn(steps, batch, INPUT, dtype=F64)
            (output, final), (expected, expected_final) = compiled(x), module(x)
            torch.testing.assert_close(output, expected, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(flat(final), flat(expected_final), atol=1e-12,
                                       rtol=1e-12)
            if call == 0:
                frames = counter.frame_count
    torch._dynamo.reset()
    assert counter.frame_count == frames, "a new shape recompiled"


def test_torch_export_keeps_the_ops_with_a_dynamic_length():
    """As the README says: the length's range starts above the largest dilation."""
    module = make("GRU", bidirectional=True)
    steps = torch.export.Dim("steps", min=max(DILATIONS) + 1)
    program = torch.export.export(module, (torch.randn(7, 5, INPUT, dtype=F64),),
                                  dynamic_shapes=({0: steps, 1: torch.export.Dim("batch")},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "fastrnn.gru_forward.default" in targets
    x = torch.randn(11, 2, INPUT, dtype=F64)
    (output, final), (expected, expected_final) = program.module()(x), module(x)
    torch.testing.assert_close(output, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(flat(final), flat(expected_final), atol=1e-12, rtol=1e-12)


def test_meta_device_gives_the_shapes():
    module = fastrnn.DilatedGRU(INPUT, HIDDEN, num_layers=2, dilations=(2, 3), device="meta")
    output, final = module(torch.empty(7, 3, INPUT, device="meta"))
    assert output.shape == (7, 3, HIDDEN) and output.device.type == "meta"
    assert [tuple(h.shape) for h in final] == [(1, 6, HIDDEN), (1, 9, HIDDEN)]


def test_default_dilations_state_dict_and_repr():
    module = fastrnn.DilatedLSTM(INPUT, HIDDEN, num_layers=3, proj_size=PROJ)
    assert module.dilations == (1, 2, 4)
    assert "dilations=(1, 2, 4)" in repr(module)
    twin = nn.LSTM(INPUT, HIDDEN, num_layers=3, proj_size=PROJ)
    twin.load_state_dict(module.state_dict())  # torch's parameter names, both ways
    module.load_state_dict(twin.state_dict())


@pytest.mark.parametrize("cls", [fastrnn.DilatedLSTM, fastrnn.DilatedGRU, fastrnn.DilatedRNN])
def test_whole_model_loads_under_torch_load_defaults(cls, tmp_path):
    """torch.load(weights_only=True), the default: a model holding a dilated stack loads with
    only torch.nn's classes allowlisted, as one holding torch.nn's layers does."""
    model = nn.Sequential(cls(INPUT, HIDDEN, num_layers=2, dilations=(2, 5)))
    torch.save(model, tmp_path / "model.pt")
    with torch.serialization.safe_globals([nn.Sequential]):  # the program's own container
        loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert type(loaded[0]) is cls and loaded[0].dilations == (2, 5)
    x = torch.randn(9, 2, INPUT)
    torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)


def test_dropout_between_layers_only_in_training():
    module = fastrnn.DilatedRNN(INPUT, HIDDEN, num_layers=2, dropout=0.5)
    x = torch.randn(9, 2, INPUT)
    module.eval()
    first, second = module(x)[0], module(x)[0]
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    module.train()
    torch.manual_seed(1)
    dropped = module(x)[0]
    assert not torch.equal(dropped, first)


@pytest.mark.parametrize("dilations,message", [
    ((1,), "one dilation per layer"), ((1, 0), "integers >= 1"), ((1, 2.0), "integers >= 1"),
    ((True, 2), "integers >= 1"), ((1, "2"), "integers >= 1")])
def test_bad_dilations_raise_value_error(dilations, message):
    with pytest.raises(ValueError, match=message):
        fastrnn.DilatedLSTM(INPUT, HIDDEN, num_layers=2, dilations=dilations)


def test_numpy_integer_dilations_are_accepted():
    import numpy as np
    module = fastrnn.DilatedGRU(INPUT, HIDDEN, num_layers=2, dilations=np.array([1, 3]))
    assert module.dilations == (1, 3) and all(type(d) is int for d in module.dilations)


def test_bad_states_raise():
    module = fastrnn.DilatedLSTM(INPUT, HIDDEN, num_layers=2, dilations=(1, 2))
    x = torch.randn(5, 3, INPUT)
    good = lambda d: (torch.zeros(1, d * 3, HIDDEN), torch.zeros(1, d * 3, HIDDEN))
    with pytest.raises(ValueError, match="one state per layer"):
        module(x, (good(1),))
    with pytest.raises(ValueError, match=r"hx\[1\] must be a tuple"):
        module(x, (good(1), torch.zeros(1, 6, HIDDEN)))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 6, 4\)"):
        module(x, (good(1), good(1)))  # layer 1 has 2 * B subsequences
    with pytest.raises(RuntimeError, match="same dtype"):
        module(x, (good(1), tuple(t.double() for t in good(2))))
    with pytest.raises(ValueError, match="2D or 3D"):
        module(torch.randn(2, 5, 3, INPUT))
