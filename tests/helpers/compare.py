"""Comparisons of results, with the bounds of the tolerance table."""

import io

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

from helpers.tolerances import atol_rtol


def assert_close(actual, expected, dtype=None, msg="", kind="default"):
    """Same shape and dtype, and values within the tolerance table's bound for `kind` and
    `dtype` (default: expected's dtype)."""
    dtype = dtype or expected.dtype
    assert actual.shape == expected.shape, f"{msg}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{msg}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, **atol_rtol(dtype, kind),
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


def raise_alike(error, call_ref, call_fast):
    """call_ref() (torch.nn) and call_fast() (fastrnn) both raise `error`, of the same type;
    returns the two exceptions (ref's, fast's)."""
    with pytest.raises(error) as ref_error:
        call_ref()
    with pytest.raises(error) as fast_error:
        call_fast()
    assert type(fast_error.value) is type(ref_error.value)
    return ref_error.value, fast_error.value


def assert_autocast_like(fast, ref, x, atol):
    """Under CPU bfloat16 autocast, with and without autograd, fast(x) has the dtypes ref(x)
    has (ref: the torch.nn module whose dtypes fast promises) and values within atol of
    fast's float32 results."""
    want = fast(x)
    for grad in (False, True):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", torch.bfloat16):
            got = fast(x)
            ref_out = ref(x)
        for g, r, w in zip(torch.utils._pytree.tree_leaves(got),
                           torch.utils._pytree.tree_leaves(ref_out),
                           torch.utils._pytree.tree_leaves(want)):
            assert g.dtype == r.dtype
            torch.testing.assert_close(g.float(), w, atol=atol, rtol=0)


def assert_round_trips(module, other):
    """other given module's state_dict, and module saved whole and loaded under torch.load's
    defaults (weights_only), compute what module does on a [5, 2, 3] input."""
    other.load_state_dict(module.state_dict())
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    x = torch.randn(5, 2, 3)
    for m in (other, loaded):
        for got, want in zip(torch.utils._pytree.tree_leaves(m(x)),
                             torch.utils._pytree.tree_leaves(module(x))):
            assert torch.equal(got, want)
