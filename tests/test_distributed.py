"""DistributedDataParallel (gloo, 2 processes on this machine): a few SGD steps on half of the
batch per process give the parameters of single-process training on the whole batch.
CPU only: two processes on one GPU need NCCL-free CUDA collectives (gloo) or two GPUs.

The test judges what the workers computed, not how their processes ended: gloo can abort a
process as it tears down at exit (SIGABRT, "terminate called without an active exception",
with torch.nn's modules too), after the training is done. Each worker writes its results
before teardown; a worker that ends without them, or that runs past a time limit, fails."""

import multiprocessing.connection
import os
import resource
import signal
import sys
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from helpers.tolerances import atol_rtol

F64 = torch.float64
WORLD = 2
TIMEOUT_S = 300  # the training takes seconds; a worker still running after this hangs
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


def results_path(out_dir, rank):
    return os.path.join(out_dir, f"results-{rank}.pt")


def write_results(out_dir, rank, results):
    """Saves a worker's results whole or not at all: written aside, then renamed."""
    path = results_path(out_dir, rank)
    torch.save(results, path + ".partial")
    os.replace(path + ".partial", path)


def describe_end(process):
    if process.exitcode < 0:
        return f"died of {signal.Signals(-process.exitcode).name}"
    return f"exited with code {process.exitcode}"


def run_workers(target, args, out_dir, world=WORLD, timeout_s=TIMEOUT_S):
    """Runs target(rank, *args) in `world` fresh processes and returns each rank's results
    (what it passed to write_results). Fails the test when a rank ends without results or is
    still running after timeout_s (it is killed); once a rank has ended without results, the
    others, which would wait for it, are killed. A rank that ends badly after writing its
    results only warns."""
    context = mp.get_context("spawn")
    processes = [context.Process(target=target, args=(rank, *args), daemon=True)
                 for rank in range(world)]
    for process in processes:
        process.start()
    has_results = lambda rank: os.path.exists(results_path(out_dir, rank))
    failed = lambda: [rank for rank, process in enumerate(processes)
                      if process.exitcode is not None and not has_results(rank)]
    deadline = time.monotonic() + timeout_s
    running = processes
    while running and not failed() and time.monotonic() < deadline:
        multiprocessing.connection.wait([p.sentinel for p in running],
                                        max(0.0, deadline - time.monotonic()))
        running = [p for p in processes if p.exitcode is None]
    cause = f"after rank {failed()[0]} failed" if failed() else f"after {timeout_s} s"
    stopped = {rank for rank, process in enumerate(processes) if process.exitcode is None}
    for rank in stopped:
        processes[rank].kill()
    for process in processes:
        process.join()
    problems, notes = [], []
    for rank, process in enumerate(processes):
        if rank in stopped:
            written = "with" if has_results(rank) else "without"
            problems.append(f"rank {rank} was still running {cause} ({written} results)")
        elif not has_results(rank):
            problems.append(f"rank {rank} {describe_end(process)} before writing its results")
        elif process.exitcode != 0:
            notes.append(f"rank {rank} {describe_end(process)} after writing its results")
    if problems:
        pytest.fail("distributed workers failed: " + "; ".join(problems + notes), pytrace=False)
    for note in notes:
        warnings.warn(note)
    return [torch.load(results_path(out_dir, rank)) for rank in range(world)]


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        per_rank = BATCH // WORLD
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        results = {}
        for cell in MODELS:
            torch.manual_seed(1)
            model = nn.parallel.DistributedDataParallel(Net(cell))
            train(model, rows)
            results[cell] = model.module.state_dict()
        write_results(out_dir, rank, results)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Per rank, {cell: state_dict after DDP training}."""
    out = tmp_path_factory.mktemp("ddp")
    results = run_workers(worker, (str(out / "init"), str(out)), str(out))
    for rank, cells in enumerate(results):
        assert set(cells) == set(MODELS), f"rank {rank} wrote results for {sorted(cells)}"
    return results


@pytest.mark.parametrize("cell", list(MODELS))
def test_ddp_matches_single_process_training(trained, cell):
    torch.manual_seed(1)
    single = Net(cell)
    before = {k: v.clone() for k, v in single.state_dict().items()}
    train(single, slice(None))
    for rank in range(WORLD):
        state = trained[rank][cell]
        for name, value in single.state_dict().items():
            torch.testing.assert_close(state[name], value, **atol_rtol(F64, "same_computation"),
                                       msg=lambda m: f"rank {rank}, {name}: {m}")
    assert any(not torch.equal(before[k], v) for k, v in single.state_dict().items())


def worker_with_fate(rank, out_dir, fate):
    """Rank 0 writes its results and then aborts, as gloo's teardown can; rank 1 meets `fate`."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort here is expected: no core file
    if rank == 0 or fate == "abort_after_results":
        write_results(out_dir, rank, {"rank": rank})
        os.abort()
    if fate == "abort_before_results":
        os.abort()
    if fate == "exit_before_results":
        sys.exit(3)
    if fate == "hang":
        time.sleep(TIMEOUT_S)


@pytest.mark.parametrize("fate, failure", [
    pytest.param("abort_after_results", None, id="abort_after_results"),
    pytest.param("abort_before_results", "rank 1 died of SIGABRT before writing its results",
                 id="abort_before_results"),
    pytest.param("exit_before_results", "rank 1 exited with code 3 before writing its results",
                 id="exit_before_results"),
    pytest.param("hang", r"rank 1 was still running after 3 s \(without results\)", id="hang"),
])
def test_workers_are_judged_by_their_results(tmp_path, fate, failure):
    timeout_s = 3 if fate == "hang" else 60  # others end in seconds, but time out on a busy machine
    run = lambda: run_workers(worker_with_fate, (str(tmp_path), fate), str(tmp_path),
                              timeout_s=timeout_s)
    if failure is None:
        with pytest.warns(UserWarning, match="died of SIGABRT after writing its results"):
            assert run() == [{"rank": 0}, {"rank": 1}]
    else:
        with pytest.raises(pytest.fail.Exception, match=failure):
            run()
