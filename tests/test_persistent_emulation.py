"""The persistent GPU kernels' per-block code, run on the host (see
tests/native/persistent_emulation.cpp), against fastrnn's CPU ops in float64.

What this proves: the partition (which block owns which units and which slice of W_hh),
the shared-memory layout, the staging of h_{t-1} / the next step's gradient, the packed
schedule (rows that finished, rows that start late in reverse), the gate math wiring,
the warp butterfly's order, and that the grid barrier's protocol orders the steps.
What it cannot prove: anything about the device itself (see the GPU tests).
"""

import math
import zlib

import pytest
import torch

import helpers.persistent_host as ph
from helpers.tolerances import TOLERANCES
from helpers.persistent_cases import (GATES, SAVED, cpu_backward, cpu_forward, h_prev_rows,
                                      poisoned, problem)

pytestmark = pytest.mark.skipif(ph.compiler() is None, reason="needs a C++ compiler")

TOL = TOLERANCES["default"]


def emulate_forward(mode, t, bs, hidden, reverse, dtype, save=True, **kw):
    ins = {k: v.to(dtype).contiguous() for k, v in t.items()}
    N, B, x = sum(bs), bs[0], ins["gx"]
    outs = {"y": poisoned(x, N, hidden), "hn": poisoned(x, B, hidden)}
    if mode.endswith("LSTM"):
        outs["cn"] = poisoned(x, B, hidden)
    if SAVED[mode] and save:
        outs["saved"] = poisoned(x, N, SAVED[mode] * hidden)
    rc = ph.emulate(mode, False, bs, hidden, reverse, {**ins, **outs}, **kw)
    return rc, outs


def emulate_backward(mode, t, fwd, grads, bs, hidden, reverse, dtype, **kw):
    ins = {k: v.to(dtype).contiguous() for k, v in {**t, **grads}.items()}
    ins["y"] = fwd["y"].to(dtype).contiguous()
    if "saved" in fwd:
        ins["saved"] = fwd["saved"].to(dtype).contiguous()
    ins.pop("gx")
    N, B, G, x = sum(bs), bs[0], GATES[mode], ins["grad_y"]
    outs = {"grad_gx": poisoned(x, N, G * hidden), "grad_h0": poisoned(x, B, hidden)}
    if mode == "GRU":
        outs["grad_gh"] = poisoned(x, N, G * hidden)
    if mode.endswith("LSTM"):
        outs["grad_c0"] = poisoned(x, B, hidden)
    rc = ph.emulate(mode, True, bs, hidden, reverse, {**ins, **outs}, **kw)
    return rc, outs


def assert_close(name, got, want, tol):
    got = got.double()
    assert not torch.isnan(got).any(), f"{name}: NaN (a slot read before it was written)"
    err = (got - want).abs().max().item()
    assert err <= tol * max(1.0, want.abs().max().item()), f"{name}: max error {err:.3g}"


MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "PEEPHOLE_LSTM", "COUPLED_LSTM",
         "PEEPHOLE_COUPLED_LSTM")
# (lengths, hidden, blocks, threads): H not a multiple of the units per block, B = 1,
# packed lengths, more rows than one pass of the product (16), blocks 1 .. > H.
SHAPES = [
    ((6, 6, 6), 37, 5, 64),
    ((5,), 9, 3, 32),
    ((7, 5, 5, 2, 1), 20, 7, 96),
    ((4,) * 18, 11, 4, 64),
    ((3, 3), 6, 1, 32),
    ((4, 2, 1), 5, 9, 64),
]


# The float32 kernels' FFMA product, and the bf16/fp16 kernels' tensor-core tiling (run
# with the tile's host twin, in float64: it checks the tiling, not the device's mma).
PRODUCTS = [(torch.float64, False), (torch.float32, False), (torch.float64, True)]


@pytest.mark.parametrize("dtype,mma", PRODUCTS, ids=["f64-ffma", "f32-ffma", "f64-mma"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{len(s[0])}x{max(s[0])}-H{s[1]}-k{s[2]}-t{s[3]}")
@pytest.mark.parametrize("mode", MODES)
def test_emulated_kernels_match_cpu_ops(mode, shape, reverse, dtype, mma):
    lengths, hidden, blocks, threads = shape
    # a seed of its own per problem, the same in every process (hash() of a str is not)
    seed = zlib.crc32(repr((mode, lengths, hidden)).encode()) % 1000
    bs, t, grads = problem(mode, lengths, hidden, seed=seed)
    fwd = cpu_forward(mode, t, bs, reverse)
    tol = TOL[dtype]

    rc, got = emulate_forward(mode, t, bs, hidden, reverse, dtype, blocks=blocks, threads=threads,
                              mma=mma)
    assert rc == 0
    for name, value in got.items():
        assert_close(name, value, fwd[name], tol)

    want = cpu_backward(mode, t, fwd, grads, bs, reverse)
    rc, got = emulate_backward(mode, t, fwd, grads, bs, hidden, reverse, dtype, blocks=blocks,
                               threads=threads, mma=mma)
    assert rc == 0
    for name in ("grad_gx", "grad_h0", "grad_c0"):
        if name in got:
            assert_close(name, got[name], want[name], tol)
    # The caller's GEMMs after the launch give the weight (and GRU bias) gradients.
    grad_gh = got.get("grad_gh", got["grad_gx"]).double()
    h_prev = h_prev_rows(fwd["y"], t["h0"], bs, reverse)
    assert_close("grad_w_hh", grad_gh.t() @ h_prev, want["grad_w_hh"], tol * 10)
    if mode == "GRU":
        assert_close("grad_b_hh", grad_gh.sum(0), want["grad_b_hh"], tol * 10)


@pytest.mark.parametrize("mode,dtype,mma", [("LSTM", torch.float64, True), ("GRU", torch.float32, False)],
                         ids=["LSTM-f64-mma", "GRU-f32-ffma"])
def test_goal_shape_partition(mode, dtype, mma):
    """B = 16, H = 768 on 132 block slots and 256 threads, as on an H100: 128 blocks of 6
    units, a 16 x 24 (forward) / 16 x 6 (backward) product per block, K split over warps."""
    lengths, hidden, reverse = (3,) * 16, 768, False
    bs, t, grads = problem(mode, lengths, hidden, seed=11)
    with torch.no_grad():
        t["w_hh"] *= 0.05  # keep the gates away from saturation at this width
    fwd = cpu_forward(mode, t, bs, reverse)
    rc, got = emulate_forward(mode, t, bs, hidden, reverse, dtype, blocks=132, threads=256, mma=mma)
    assert rc == 0
    for name, value in got.items():
        assert_close(name, value, fwd[name], TOL[dtype])
    want = cpu_backward(mode, t, fwd, grads, bs, reverse)
    rc, got = emulate_backward(mode, t, fwd, grads, bs, hidden, reverse, dtype, blocks=132,
                               threads=256, mma=mma)
    assert rc == 0
    for name in ("grad_gx", "grad_h0", "grad_c0"):
        if name in got:
            assert_close(name, got[name], want[name], TOL[dtype])


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "PEEPHOLE_LSTM"])
def test_forward_without_saved(mode):
    """saved = null (inference): the same outputs, and nothing written but y, hn (and cn).
    Every buffer the launch can address (the inputs, the outputs and the backward's
    buffers, all but saved) is a slice of one NaN-poisoned arena with a gap after each;
    after the launch every element outside y, hn and cn keeps its bits, so neither the
    saved values nor anything else went to another buffer, a gap or an unused pointer."""
    hidden = 10
    bs, t, grads = problem(mode, (4, 3, 1), hidden, seed=5)
    fwd = cpu_forward(mode, t, bs, False)
    N, B, G = sum(bs), bs[0], GATES[mode]
    shapes = {name: tuple(value.shape) for name, value in {**t, **grads}.items()}
    shapes.update(y=(N, hidden), hn=(B, hidden), grad_gx=(N, G * hidden), grad_h0=(B, hidden))
    if mode.endswith("LSTM"):
        shapes.update(cn=(B, hidden), grad_c0=(B, hidden))
    if mode == "GRU":
        shapes.update(grad_gh=(N, G * hidden))
    spans, end = {}, 0
    for name, shape in shapes.items():  # each 16-element aligned, 16 poisoned elements after
        spans[name] = (end, end + math.prod(shape))
        end += -(-math.prod(shape) // 16) * 16 + 16
    arena = torch.full((end,), float("nan"), dtype=torch.float64)
    buffers = {name: arena[a:b].view(shapes[name]) for name, (a, b) in spans.items()}
    for name, value in {**t, **grads}.items():
        buffers[name].copy_(value)
    before = arena.clone()
    assert ph.emulate(mode, False, bs, hidden, False, buffers, blocks=3) == 0
    outputs = ("y", "hn", "cn") if mode.endswith("LSTM") else ("y", "hn")
    for name in outputs:
        assert_close(name, buffers[name], fwd[name], TOL[torch.float64])
    changed = arena.view(torch.int64) != before.view(torch.int64)  # bitwise: NaN == NaN
    for name in outputs:
        changed[spans[name][0]:spans[name][1]] = False
    assert not changed.any(), [name for name, (a, b) in spans.items() if changed[a:b].any()] or (
        "a gap between buffers was written")


@pytest.mark.parametrize("mode,mma", [("LSTM", False), ("GRU", True)], ids=["LSTM-ffma", "GRU-mma"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_threaded_blocks_with_the_barrier_match_the_sequential_run(mode, mma, backward):
    """One thread per block, block 0 late at every step: same bits as phase by phase."""
    lengths, hidden, reverse = (6, 5, 5, 3), 13, True
    bs, t, grads = problem(mode, lengths, hidden, seed=7)
    fwd = cpu_forward(mode, t, bs, reverse)
    run = emulate_backward if backward else emulate_forward
    args = (mode, t, fwd, grads, bs, hidden, reverse) if backward else (mode, t, bs, hidden, reverse)
    rc, seq = run(*args, torch.float64, blocks=4, mma=mma)
    assert rc == 0
    rc, thr = run(*args, torch.float64, blocks=4, mma=mma, threaded=True, delay_us=300)
    assert rc == 0
    for name in seq:
        assert torch.equal(seq[name], thr[name]), name


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_without_the_barrier_blocks_read_rows_not_yet_written(backward):
    """Negative control: the poisoned rows make a missing barrier visible."""
    mode, lengths, hidden = "LSTM", (5, 5), 12
    bs, t, grads = problem(mode, lengths, hidden, seed=3)
    fwd = cpu_forward(mode, t, bs, False)
    if backward:
        rc, got = emulate_backward(mode, t, fwd, grads, bs, hidden, False, torch.float64,
                                   blocks=4, threaded=True, skip_barrier=True, delay_us=20000)
        out = got["grad_gx"]
    else:
        rc, got = emulate_forward(mode, t, bs, hidden, False, torch.float64, blocks=4,
                                  threaded=True, skip_barrier=True, delay_us=20000)
        out = got["y"]
    assert rc == 0
    assert torch.isnan(out).any()


def test_barrier_orders_every_round():
    lib = ph.library()
    assert lib.fastrnn_barrier_stress(8, 2000, 0, 0) == 0
    assert lib.fastrnn_barrier_stress(5, 50, 0, 200) == 0


def test_broken_barrier_is_caught():
    assert ph.library().fastrnn_barrier_stress(4, 20, 1, 2000) > 0


H100_SMS, H100_SMEM = 132, 227 * 1024


@pytest.mark.parametrize("gates,batch,hidden,t_bytes,backward,blocks", [
    (4, 16, 768, 2, False, 128),   # the goal shape, bf16: 6 units per block
    (4, 16, 768, 2, True, 128),
    (4, 16, 1024, 2, False, 128),  # 8 units per block, 64 KiB of W_hh each
    (4, 16, 1024, 2, True, 128),   # stage [16, 4096] bf16 = 128 KiB + 64 KiB of W_hh
    (4, 16, 1024, 4, False, 128),  # float32 forward fits ...
    (4, 16, 1024, 4, True, 0),     # ... its backward does not (256 KiB staging)
    (4, 64, 1024, 2, True, 0),
    (3, 16, 1024, 4, True, 0),
    (1, 1, 100, 4, False, 100),    # one unit per block
])
def test_plan_on_an_h100(gates, batch, hidden, t_bytes, backward, blocks):
    got = ph.library().fastrnn_plan_blocks(gates, batch, hidden, H100_SMS, H100_SMEM, t_bytes,
                                           int(backward))
    assert got == blocks


@pytest.mark.parametrize("mma", [False, True], ids=["ffma", "mma"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("mode", MODES)
def test_steps_without_rows(mode, reverse, mma):
    """batch_sizes ending in zeros (the ops allow them): those steps do nothing."""
    bs, t, grads = problem(mode, (4, 3, 1), 10, seed=9)
    bs = bs + [0, 0]
    fwd = cpu_forward(mode, t, bs, reverse)
    rc, got = emulate_forward(mode, t, bs, 10, reverse, torch.float64, blocks=3, mma=mma)
    assert rc == 0
    for name, value in got.items():
        assert_close(name, value, fwd[name], TOL[torch.float64])
    want = cpu_backward(mode, t, fwd, grads, bs, reverse)
    rc, got = emulate_backward(mode, t, fwd, grads, bs, 10, reverse, torch.float64, blocks=3,
                               mma=mma)
    assert rc == 0
    for name in ("grad_gx", "grad_h0", "grad_c0"):
        if name in got:
            assert_close(name, got[name], want[name], TOL[torch.float64])
