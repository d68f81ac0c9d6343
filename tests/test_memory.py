"""Memory: what a forward keeps for backward is no more than torch.nn keeps for the same
layer, and hundreds of forward+backward iterations leave the resident memory flat (measured
in a child process, this file run as a script, after a warm-up).

The child fixes glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_): left dynamic, it rises as
large blocks are freed and the heap then grows by up to ~1.5 MB over a thousand iterations
before it levels off, for fastrnn as for any pattern of large, short-lived buffers."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers.cases import CELLS
from helpers.devices import DEVICES
from helpers.paths import child_env
from helpers.running import flatten_result, weighted_loss
from helpers.tolerances import atol_rtol

T, B, I, H, PROJ = 20, 8, 16, 32, 8
LENGTHS = torch.linspace(T, 1, B).long()  # sorted, T down to 1


def layer_pair(cell, **kwargs):
    torch_cls, fast_cls, extra = CELLS[cell]
    extra = {**extra, "proj_size": PROJ} if "proj_size" in extra else extra
    torch.manual_seed(0)
    ref = torch_cls(I, H, num_layers=2, bidirectional=True, **extra, **kwargs)
    fast = fast_cls(I, H, num_layers=2, bidirectional=True, **extra, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def layer_input(kind, device="cpu"):
    """A leaf: x [T, B, I], or packed data [sum(LENGTHS), I] with its batch_sizes."""
    x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1)).to(device)
    if kind == "dense":
        return x.requires_grad_()
    packed = pack_padded_sequence(x, LENGTHS)
    return PackedSequence(packed.data.requires_grad_(), packed.batch_sizes)


def saved_bytes(module, inp):
    """Bytes of the distinct storages autograd keeps for backward after module(inp)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(inp)
    return sum(storages.values())


@pytest.mark.parametrize("kind", ["dense", "packed"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device", DEVICES)
def test_saved_for_backward_not_more_than_torch_nn(device, cell, kind):
    """torch.nn's figure is the smaller of its default path and its path without oneDNN
    (the dense LSTM's default, oneDNN, keeps more). fastrnn keeps batch_sizes ([T] int64,
    8 bytes a step) besides what torch.nn keeps; for the RNN cells that is the difference."""
    ref, fast = layer_pair(cell)
    ref, fast = ref.to(device), fast.to(device)
    inp = layer_input(kind, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn: projections are not run by oneDNN
        torch_bytes = saved_bytes(ref, inp)
        with torch.backends.mkldnn.flags(enabled=False):
            torch_bytes = min(torch_bytes, saved_bytes(ref, inp))
    fast_bytes = saved_bytes(fast, inp)
    allowance = 8 * T if cell.startswith("RNN") else 0
    assert fast_bytes <= torch_bytes + allowance, (fast_bytes, torch_bytes)


# --- resident memory over many iterations (child process) ----------------------------------

WARMUP, ITERATIONS = 50, 200
# bytes: allocator noise (~0.4 MB seen). One leaked [N, 4H] buffer per iteration would add
# 16 MB, one leaked h_n [L*D, B, P] 0.8 MB.
RSS_TOLERANCE = 2 ** 20


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_rss(cell, kind):
    """RSS after a warm-up and after ITERATIONS more forward+backward iterations."""
    _, fast = layer_pair(cell)
    inp = layer_input(kind)
    for i in range(WARMUP + ITERATIONS):
        if i == WARMUP:
            before = rss_bytes()
        weighted_loss(flatten_result(fast(inp))).backward()
        fast.zero_grad(set_to_none=False)
    return before, rss_bytes()


def test_large_buffers_reused_between_calls():
    """A walk's buffers of 8 MB and more (here y, [T*B, H] in float32) take the memory of the
    last call's once they are freed, with the right values, and never a live result's."""
    import fastrnn
    torch.manual_seed(0)
    ref, fast = torch.nn.LSTM(16, 256), fastrnn.LSTM(16, 256)
    fast.load_state_dict(ref.state_dict())
    xs = [torch.randn(64, 128, 16) for _ in range(3)]  # y: 64 * 128 * 256 * 4 B = 8 MB
    with torch.no_grad():
        first = fast(xs[0])[0]
        freed = first.data_ptr()
        del first
        second = fast(xs[1])[0]
        third = fast(xs[2])[0]
        assert second.data_ptr() == freed
        assert third.data_ptr() != second.data_ptr()
        for x, out in ((xs[1], second), (xs[2], third)):
            torch.testing.assert_close(out, ref(x)[0], **atol_rtol(torch.float32))


@pytest.fixture(scope="module")
def rss():
    env = child_env(MALLOC_MMAP_THRESHOLD_=str(64 * 1024))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


RSS_CASES = [(cell, "dense") for cell in CELLS] + [("LSTM-proj", "packed"), ("GRU", "packed")]


@pytest.mark.parametrize("cell,kind", RSS_CASES, ids=[f"{c}-{k}" for c, k in RSS_CASES])
def test_resident_memory_flat(rss, cell, kind):
    before, after = rss[f"{cell}-{kind}"]
    assert after - before <= RSS_TOLERANCE, (before, after)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({f"{c}-{k}": measure_rss(c, k) for c, k in RSS_CASES}))
