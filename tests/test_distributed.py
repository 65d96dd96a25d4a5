"""Data parallelism: two real gloo processes launched by torchrun match one process, step for step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import torchrun_launcher

from tinyminds.training import checkpoint
from tinyminds.training.metrics import read_metrics

pytestmark = pytest.mark.slow

OVERRIDES = [
    "batch_size=16",
    "grad_accum=2",  # exercises DDP's no_sync on the first micro-batch
    "epochs=1",
    "max_steps=12",
    "lr=3e-3",
    "warmup_steps=3",
    "eval_chunks=96",
    "eval_batch_size=32",
    "checkpoint_every=6",
    "log_every=1",
    "seed=5",
]


def _run(launcher: list[str], data: Path, out: Path) -> None:
    command = [
        *launcher,
        "-m",
        "tinyminds",
        "train",
        "llama-tiny",
        f"data={data}",
        f"out={out}",
        *OVERRIDES,
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_gloo_processes_match_one_process(prepared_data: Path, tmp_path: Path) -> None:
    single, double = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], prepared_data, single)
    _run(torchrun_launcher(), prepared_data, double)

    one, two = read_metrics(single), read_metrics(double)
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert a["kind"] == b["kind"]
        assert b["ce"] == pytest.approx(a["ce"], rel=1e-4), a["step"]
    weights_one = torch.load(
        checkpoint.checkpoint_folders(single / "checkpoints")[-1] / "state.pt", weights_only=False
    )
    weights_two = torch.load(
        checkpoint.checkpoint_folders(double / "checkpoints")[-1] / "state.pt", weights_only=False
    )
    for name, tensor in weights_one["model"].items():
        torch.testing.assert_close(weights_two["model"][name], tensor, rtol=1e-3, atol=1e-5)
    # Each process saved its own random state; only the main one wrote metrics and the model.
    latest = checkpoint.checkpoint_folders(double / "checkpoints")[-1]
    assert sorted(p.name for p in latest.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
    assert (double / "model" / "config.json").is_file()
