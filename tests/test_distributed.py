"""DistributedDataParallel (gloo, 2 processes on this machine): a few SGD steps on half of the
batch per process give the parameters of single-process training on the whole batch.
CPU only: two processes on one GPU need NCCL-free CUDA collectives (gloo) or two GPUs."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastrnn  # noqa: E402

F64 = torch.float64
WORLD = 2
STEPS, BATCH, T, INPUT, HIDDEN = 3, 6, 5, 3, 4
# name -> (class, kwargs)
MODELS = {
    "LSTM-proj": (fastrnn.LSTM, {"proj_size": 2}),
    "GRU": (fastrnn.GRU, {}),
    "RNN-tanh": (fastrnn.RNN, {}),
}


class Net(nn.Module):
    """A packed, bidirectional two-layer recurrence and a linear head on the last states."""

    def __init__(self, cell):
        super().__init__()
        cls, kwargs = MODELS[cell]
        self.rnn = cls(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=F64, **kwargs)
        self.head = nn.Linear(2 * (kwargs.get("proj_size") or HIDDEN), 1, dtype=F64)

    def forward(self, x, lengths):  # x: [B, T, I]; lengths: [B]
        _, hidden = self.rnn(pack_padded_sequence(x, lengths, batch_first=True,
                                                  enforce_sorted=False))
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # [L*D, B, P]
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1)).squeeze(1)  # [B]


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, BATCH, T, INPUT, generator=gen, dtype=F64)
    lengths = torch.randint(1, T + 1, (STEPS, BATCH), generator=gen)
    target = torch.randn(STEPS, BATCH, generator=gen, dtype=F64)
    return x, lengths, target


def train(model, rows):
    """SGD on the batch rows `rows` of every step; the loss is a mean over those rows, so the
    average of the two processes' gradients is the whole batch's gradient."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, lengths, target = data()
    for step in range(STEPS):
        optimizer.zero_grad()
        prediction = model(x[step, rows], lengths[step, rows])
        (prediction - target[step, rows]).pow(2).mean().backward()
        optimizer.step()


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        per_rank = BATCH // WORLD
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        for cell in MODELS:
            torch.manual_seed(1)
            model = nn.parallel.DistributedDataParallel(Net(cell))
            train(model, rows)
            torch.save(model.module.state_dict(), os.path.join(out_dir, f"{cell}-{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("cell", list(MODELS))
def test_ddp_matches_single_process_training(trained, cell):
    torch.manual_seed(1)
    single = Net(cell)
    before = {k: v.clone() for k, v in single.state_dict().items()}
    train(single, slice(None))
    for rank in range(WORLD):
        state = torch.load(trained / f"{cell}-{rank}.pt")
        for name, value in single.state_dict().items():
            torch.testing.assert_close(state[name], value, atol=1e-12, rtol=1e-12,
                                       msg=lambda m: f"rank {rank}, {name}: {m}")
    assert any(not torch.equal(before[k], v) for k, v in single.state_dict().items())
