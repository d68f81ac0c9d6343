"""Tests of fastrnn.bench's command line: listing cases, usage errors, --threads, and the
--backend choices (defaults per device, checks, errors)."""

import json

import pytest
import torch

from fastrnn.bench.__main__ import main
from fastrnn.bench.grids import Case
from helpers.bench import synthetic


# --- arguments ---------------------------------------------------------------------------


def test_list_custom_product(capsys):
    assert main(["--cell", "rnn", "GRU", "--T", "7", "--B", "2", "--H", "8", "16",
                 "--mode", "fwd", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == "RNN_TANH f32 T=7 B=2 I=8 H=8 fwd"


def test_usage_errors(capsys):
    assert main(["--grid", "core", "--T", "5", "--list"]) == 2
    assert main(["--cell", "LSTM2", "--list"]) == 2
    assert main(["--device", "tpu", "--list"]) == 2
    assert main(["--repeats", "0", "--list"]) == 2
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--list"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--against", "x.json"])
    assert exit_info.value.code == 2


def test_threads_option_is_recorded(tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["--T", "2", "--B", "1", "--H", "3", "--mode", "fwd", "--repeats", "1",
                     "--warmup", "0", "--min-time", "0", "--threads", "1",
                     "--gemm-size", "128",
                     "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["threads"] == 1 and len(doc["cases"]) == 1


# --- --backend ---------------------------------------------------------------------------


def test_backend_defaults_and_checks():
    from fastrnn.bench.backends import BACKENDS, check_backends, default_backends
    assert {b: s["FASTRNN_PERSISTENT"] for b, s in BACKENDS.items()} == {
        "auto": "auto", "step": "0", "persistent": "1", "fused": "auto", "blas": "auto"}
    assert {b: s["FASTRNN_CPU_FUSED"] for b, s in BACKENDS.items()} == {
        "auto": None, "step": None, "persistent": None, "fused": "1", "blas": "0"}
    assert default_backends("cpu") == ("auto",)
    assert default_backends("cuda") == default_backends("cuda:1") == ("auto", "step")
    assert check_backends(["persistent", "auto", "persistent"], "cuda") == ["persistent", "auto"]
    assert check_backends(["auto", "step", "persistent"], "cuda:0") == [
        "auto", "step", "persistent"]
    assert check_backends(["blas", "auto", "fused"], "cpu") == ["blas", "auto", "fused"]
    with pytest.raises(ValueError, match="does not apply to the CPU"):
        check_backends(["auto", "persistent"], "cpu")
    with pytest.raises(ValueError, match="backend blas does not apply to the CUDA"):
        check_backends(["auto", "blas"], "cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        check_backends(["fast"], "cuda")


def test_backend_usage_errors(capsys):
    """Bad names, step/persistent on the CPU and the old --variants are argparse errors."""
    for argv, message in [
            (["--backend", "fast"], "invalid choice: 'fast'"),
            (["--backend"], "expected at least one argument"),
            (["--device", "cpu", "--backend", "persistent"], "does not apply to the CPU"),
            (["--device", "cpu", "--backend", "auto", "step"], "backend step does not apply"),
            (["--variants", "persistent"], "--variants was replaced by --backend")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["--T", "2", "--list"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv
    assert main(["--device", "cpu", "--backend", "auto", "--T", "2", "--list"]) == 0
    assert main(["--device", "cpu", "--backend", "blas", "fused", "--T", "2", "--list"]) == 0


def test_backend_default_per_device_reaches_the_suite(monkeypatch):
    """CPU: auto; CUDA: auto step; --backend is passed on as given."""
    from fastrnn.bench import suite
    seen = []

    def fake_run_suite(cases, *, device, backends, settings, **kw):
        seen.append((device, backends))
        doc = synthetic({("LSTM", 2, "fwd"): 1.0}, backends=backends)
        doc.update(torch_device=device, cuda=None, cudnn=None, driver=None, commit="x",
                   date="today")
        return doc

    monkeypatch.setattr(suite, "run_suite", fake_run_suite)
    argv = ["--T", "2", "--B", "1", "--H", "3", "--mode", "fwd"]
    assert main(argv + ["--device", "cpu"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(argv + ["--device", "cuda"]) == 0
    assert main(argv + ["--device", "cuda", "--backend", "step", "auto", "step"]) == 0
    assert seen == [("cpu", ["auto"]), ("cuda", ["auto", "step"]),
                    ("cuda", ["step", "auto"])]


def test_the_suite_rejects_cuda_backends_on_the_cpu():
    from fastrnn.bench.suite import run_suite
    with pytest.raises(ValueError, match="does not apply to the CPU"):
        run_suite([Case("GRU", "float32", 2, 1, 3, 3, mode="fwd")], gemm_size=64,
                  backends=("auto", "step"))
