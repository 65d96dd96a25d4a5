"""The training engine end to end on a small real corpus with a tiny GPT-2."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import InterruptAfter, one_thread
from transformers import AutoModelForCausalLM, AutoTokenizer

from tinyminds.data.chunks import load_prepared, validation_subset
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.errors import UserError
from tinyminds.training import checkpoint
from tinyminds.training.config import TrainConfig
from tinyminds.training.engine import TrainingDiverged, train
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives import Batch, CausalLMObjective, ObjectiveOutput

pytestmark = pytest.mark.slow

# 2 epochs of ~40 optimizer steps each on the prepared Shakespeare fixture.
SETTINGS = {
    "model": "gpt2-tiny",
    "batch_size": 32,
    "epochs": 2,
    "lr": 3e-3,
    "warmup_steps": 10,
    "eval_chunks": 128,
    "checkpoint_every": 10,
    "eval_every": 15,
    "log_every": 1,
    "seed": 3,
}
STEPS_PER_EPOCH = 48


def make_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, "data": str(data), "out": str(out), **changes})  # type: ignore[arg-type]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


def val_ces(run_dir: Path) -> list[float]:
    return [r["ce"] for r in read_metrics(run_dir) if r["kind"] == "val"]


def epoch_end_ces(run_dir: Path) -> list[float]:
    """The validations at each epoch's end (the others come from ``eval_every``)."""
    return [
        r["ce"]
        for r in read_metrics(run_dir)
        if r["kind"] == "val" and r["step"] % STEPS_PER_EPOCH == 0
    ]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = checkpoint.checkpoint_folders(run_dir / "checkpoints")[-1]
    return torch.load(latest / "state.pt", weights_only=False)["model"]


# Runs compared step by step use one CPU thread, in this process and in the subprocesses alike: with
# more, MKL may pick another thread count under load (MKL_DYNAMIC), which changes float summation
# order and so the last digits of the losses.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference_run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run that several tests compare against."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    with one_thread():
        train(make_config(prepared_data, out))
    return out


def test_validation_every_n_steps_gives_the_learning_curve(
    reference_run: Path, prepared_data: Path
) -> None:
    val = [r for r in read_metrics(reference_run) if r["kind"] == "val"]
    # Every 15 steps, plus each epoch's end (48, 96), each once: 8 points for 96 steps.
    assert [r["step"] for r in val] == [15, 30, 45, 48, 60, 75, 90, 96]
    manifest = json.loads((prepared_data / "manifest.json").read_text())["splits"]["train"]
    for record in val:
        tokens = record["step"] * SETTINGS["batch_size"] * 128
        assert record["tokens"] == tokens
        assert record["words"] == round(tokens * manifest["words"] / manifest["tokens"])
        assert record["epoch"] == round(record["step"] / STEPS_PER_EPOCH, 4)
    ces = [r["ce"] for r in val]
    assert ces[-1] < ces[0]  # the curve goes down
    # The summary's validation history (and the best epoch) are the epoch ends only.
    summary = json.loads((reference_run / "summary.json").read_text())
    assert [r["step"] for r in summary["validation"]] == [48, 96]


def test_validation_ce_falls_and_model_exports(reference_run: Path, prepared_data: Path) -> None:
    ces = epoch_end_ces(reference_run)
    vocab = load_prepared(prepared_data).vocab_size
    assert len(ces) == 2
    assert ces[1] < ces[0] < math.log(vocab), ces

    records = read_metrics(reference_run)
    first = next(r for r in records if r["kind"] == "train")
    assert {"step", "epoch", "loss", "lr", "tokens_per_s", "ce", "grad_norm"} <= set(first)
    assert first["lr"] == 0.0  # warm-up starts at zero
    val = [r for r in records if r["kind"] == "val"]
    assert val[-1]["perplexity"] == pytest.approx(math.exp(val[-1]["ce"]))

    # The exported folder is a plain Hugging Face model + tokenizer, and it is the best epoch.
    model = AutoModelForCausalLM.from_pretrained(reference_run / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(reference_run / "model")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    data = load_prepared(prepared_data)
    dev = data.chunks("dev")
    subset = validation_subset(len(dev), SETTINGS["eval_chunks"], 1234)
    ids = torch.from_numpy(dev[subset].astype("int64"))
    with torch.no_grad():
        ce = CausalLMObjective()(model, Batch(ids, torch.from_numpy(subset), "dev")).metrics["ce"]
    assert ce.item() == pytest.approx(min(ces), abs=1e-4)
    info = json.loads((reference_run / "model" / "tinyminds.json").read_text())
    assert info["tokenizer_hash"] == data.tokenizer_hash
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 + ces.index(min(ces))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinyminds", *args]


def _overrides(config: TrainConfig) -> list[str]:
    return [
        f"{key}={value}"
        for key, value in {**SETTINGS, "data": config.data, "out": config.out}.items()
    ]


def test_resume_after_kill_9_matches_uninterrupted_run(
    reference_run: Path, prepared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    config = make_config(prepared_data, out)
    command = _cli("train", "gpt2-tiny", *_overrides(config), "-q")
    env = {**os.environ, **ONE_THREAD_ENV}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    # Kill mid-way through the second epoch, past a checkpoint, while the process is still running.
    while time.monotonic() < deadline:
        done = train_losses(out) if (out / "metrics.jsonl").exists() else {}
        if max(done, default=0) >= 50:  # inside the second epoch (48 steps each), far from the end
            break
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    total_steps = len(train_losses(reference_run))
    assert max(train_losses(out)) < total_steps  # it really died before the end

    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=300, env=env
    )
    assert resumed.returncode == 0, resumed.stderr

    reference = train_losses(reference_run)
    losses = train_losses(out)
    assert sorted(losses) == sorted(reference) == list(range(1, total_steps + 1))
    # Bit for bit: a resume that lost any state (optimizer moments, schedule, data order, RNG) shows.
    assert losses == reference
    assert val_ces(out) == val_ces(reference_run)
    expected = final_weights(reference_run)
    for name, tensor in final_weights(out).items():
        assert torch.equal(tensor, expected[name]), name


def test_resume_skips_half_written_checkpoint_and_log_line(
    prepared_data: Path, tmp_path: Path, reference_run: Path
) -> None:
    out = tmp_path / "run"
    with one_thread(), pytest.raises(KeyboardInterrupt):
        train(make_config(prepared_data, out), objective=InterruptAfter(35))
    # A process killed mid-write leaves a hidden staging folder and maybe a partial log line.
    staging = checkpoint.staging_folder(out / "checkpoints", 40)
    staging.mkdir()
    (staging / "state.pt").write_bytes(b"\x00" * 10)
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "train", "step": 36, "lo')
    # Resuming with another config is refused, naming the key that differs...
    with pytest.raises(UserError, match="max_steps"):
        train(make_config(prepared_data, out, max_steps=50), resume=True)
    # ...the same config carries on from step 30's checkpoint and matches the uninterrupted run.
    with one_thread():
        train(make_config(prepared_data, out), resume=True)
    assert not staging.exists()
    reference = train_losses(reference_run)
    losses = train_losses(out)
    assert sorted(losses) == sorted(reference)
    assert losses == reference


def test_existing_run_is_not_overwritten(reference_run: Path, prepared_data: Path) -> None:
    before = (reference_run / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(make_config(prepared_data, reference_run))
    assert (reference_run / "metrics.jsonl").read_bytes() == before


def test_full_disk_keeps_previous_checkpoint(
    prepared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    calls = {"state": 0}

    def failing_save(obj: object, path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("state.pt"):
            calls["state"] += 1
            if calls["state"] == 2:  # the second checkpoint hits a full disk half-way
                Path(str(path)).write_bytes(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    out = tmp_path / "run"
    with pytest.raises(
        UserError, match=r"is full: .* MB free, about .* MB needed; .*step-00000010 is kept"
    ):
        train(make_config(prepared_data, out, max_steps=30))
    folders = checkpoint.checkpoint_folders(out / "checkpoints")
    assert [f.name for f in folders] == ["step-00000010"]
    assert not list((out / "checkpoints").glob(".step-*"))
    state = torch.load(folders[0] / "state.pt", weights_only=False)
    assert state["loop"]["step"] == 10


class NaNAfter:
    """Cross-entropy that turns NaN at a given training call (a diverging run)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.inner = calls, CausalLMObjective()

    def __call__(self, model: torch.nn.Module, batch: Batch) -> ObjectiveOutput:
        output = self.inner(model, batch)
        if batch.split == "train":
            self.calls -= 1
            if self.calls < 0:
                output.loss = output.loss * float("nan")
        return output


def test_nan_loss_stops_with_step_and_keeps_checkpoint(prepared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 16 \(epoch 1, batch 16"):
        train(make_config(prepared_data, out), objective=NaNAfter(15))
    folders = checkpoint.checkpoint_folders(out / "checkpoints")
    assert [f.name for f in folders] == ["step-00000010"]


def test_init_from_refuses_a_model_with_another_tokenizer(
    reference_run: Path, shakespeare_corpus: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-data"
    prepare(shakespeare_corpus, other, PrepareOptions(vocab_size=600))
    config = make_config(other, tmp_path / "run", init_from=str(reference_run / "model"))
    with pytest.raises(UserError, match=r"tokenizer of .*model.* differs from the tokenizer of"):
        train(config)


def test_init_from_same_tokenizer_continues_training(
    reference_run: Path, prepared_data: Path, tmp_path: Path
) -> None:
    config = make_config(
        prepared_data, tmp_path / "run", init_from=str(reference_run / "model"), max_steps=5
    )
    result = train(config)
    scratch = train(make_config(prepared_data, tmp_path / "scratch", max_steps=5))
    # The loaded weights carry the reference's learning: five steps from them end far below five
    # steps from scratch, and close to where the reference ended (a fresh optimizer's first steps
    # may move them a little).
    assert result.best_val_ce < scratch.best_val_ce - 0.5
    assert abs(result.best_val_ce - min(val_ces(reference_run))) < 0.1


def test_too_little_data_for_one_step(prepared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fewer than one optimizer step"):
        train(make_config(prepared_data, tmp_path / "run", batch_size=4096))


def test_cli_train_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        _cli("train", "gpt2-tiny", f"data={tmp_path / 'nothing'}", f"out={tmp_path / 'run'}"),
        capture_output=True,
        text=True,
        env={**os.environ, "TINYMINDS_QUIET": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_tensorboard_logging(prepared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard=true needs the tensorboard package")
    out = tmp_path / "run"
    train(make_config(prepared_data, out, max_steps=3, tensorboard=True, checkpoint_every=0))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
