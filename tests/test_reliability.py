"""Reliability: one writer per run folder, every bad value refused before anything is written,
checkpoints that prove their integrity, a full disk, moved folders, resumed logs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch
from conftest import InterruptAfter, one_thread, torchrun_launcher

from tinyminds.cli import main
from tinyminds.config import declared_ranges, numeric_fields
from tinyminds.data.prepare import PrepareOptions
from tinyminds.errors import UserError
from tinyminds.evaluation.glue import GlueRecipe
from tinyminds.files import folder_lock, to_json
from tinyminds.training import checkpoint
from tinyminds.training.config import DistillConfig, TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.metrics import MetricsLog, read_metrics

SETTINGS = {
    "model": "gpt2-tiny",
    "batch_size": 16,
    "epochs": 1,
    "max_steps": 24,
    "lr": 3e-3,
    "warmup_steps": 4,
    "eval_chunks": 32,
    "checkpoint_every": 10,
    "log_every": 4,
    "seed": 5,
}


def make_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, "data": str(data), "out": str(out), **changes})  # type: ignore[arg-type]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def overrides(data: Path, out: Path, **changes: object) -> list[str]:
    return [f"{k}={v}" for k, v in {**SETTINGS, "data": data, "out": out, **changes}.items()]


def train_records(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> the logged training record's losses (not its timing)."""
    return {
        r["step"]: {k: v for k, v in r.items() if k not in ("tokens_per_s",)}
        for r in read_metrics(run_dir)
        if r["kind"] == "train"
    }


# --- every numeric setting has a range, checked before anything is written ----------------------


@pytest.mark.parametrize("cls", [TrainConfig, DistillConfig, PrepareOptions, GlueRecipe])
def test_every_numeric_config_field_declares_its_range(cls: type) -> None:
    assert set(numeric_fields(cls)) <= set(declared_ranges(cls)), set(numeric_fields(cls)) - set(
        declared_ranges(cls)
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("batch_size=-4", "key 'batch_size' is -4; allowed: an integer >= 1"),
        ("batch_size=0", "key 'batch_size' is 0; allowed: an integer >= 1"),
        ("epochs=0", "key 'epochs' is 0; allowed: an integer >= 1"),
        ("max_steps=-3", "key 'max_steps' is -3; allowed: an integer >= 0"),
        ("lr=-1", "key 'lr' is -1.0; allowed: a number > 0"),
        ("adam_beta2=1", "key 'adam_beta2' is 1.0; allowed: a number in [0, 1)"),
    ],
)
def test_bad_numbers_are_one_line_and_write_nothing(
    setting: str,
    expected: str,
    prepared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    code, err = cli(
        capsys, "train", "gpt2-tiny", f"data={prepared_data}", f"out={out}", setting, "-q"
    )
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()


def _strict(text: str) -> object:
    """Parse ``text`` as strict JSON: Python's reader accepts NaN and Infinity, JSON does not."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_files_never_hold_infinity_or_nan(tmp_path: Path) -> None:
    text = to_json({"best": float("inf"), "values": [1.0, float("nan")], "nested": {"x": -1e999}})
    assert _strict(text) == {"best": None, "values": [1.0, None], "nested": {"x": None}}
    # The training log too: a diverged step's record (loss nan) stays valid JSON.
    log = MetricsLog(
        tmp_path, enabled=True, tensorboard=False, wandb=False, wandb_project="", config={}
    )
    log.write({"kind": "train", "step": 3, "loss": float("nan"), "grad_norm": float("inf")})
    (line,) = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert _strict(line) == {"kind": "train", "step": 3, "loss": None, "grad_norm": None}


def test_out_naming_a_file_is_one_line(
    prepared_data: Path,
    shakespeare_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    code, err = cli(capsys, "train", "gpt2-tiny", f"data={prepared_data}", f"out={a_file}", "-q")
    assert code == 2 and f"out= {a_file} is a file, not a folder" in err
    code, err = cli(capsys, "prepare", str(shakespeare_corpus), "--out", str(a_file), "-q")
    assert code == 2 and f"--out {a_file} is a file, not a folder" in err
    assert a_file.read_text() == "keep me"


def test_a_refused_run_does_not_block_the_corrected_command(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, err = cli(capsys, "train", "gpt2-tiny", *overrides(prepared_data, out, batch_size=5000))
    assert code == 2 and "fewer than one optimizer step" in err
    assert not (out / "config.yaml").exists()
    # A run stopped before its first logged step (here: its config written by hand, as a crash
    # after writing it would leave) does not block either, with or without --resume.
    out.mkdir()
    (out / "config.yaml").write_text("model: gpt2-tiny\nbatch_size: 5000\n")
    code, err = cli(capsys, "train", "gpt2-tiny", *overrides(prepared_data, out, max_steps=2))
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [2]


def test_a_truncated_training_array_writes_nothing(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    array = data / "train.npy"
    array.write_bytes(array.read_bytes()[:-1000])
    out = tmp_path / "run"
    code, err = cli(capsys, "train", "gpt2-tiny", *overrides(data, out))
    assert code == 2 and "train.npy" in err and err.count("\n") == 1, err
    assert not (out / "config.yaml").exists()


# --- one writer per run folder ------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with folder_lock(out, "tinyminds run of gpt2-tiny"):
        code, err = cli(capsys, "train", "gpt2-tiny", *overrides(prepared_data, out), "--resume")
    assert code == 2 and f"{out} is in use by another tinyminds run of gpt2-tiny (pid " in err
    assert f"pid {os.getpid()}" in err
    assert not (out / "metrics.jsonl").exists()


def test_the_lock_of_a_killed_process_is_taken_over(prepared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tinyminds.files import folder_lock\n"
            f"with folder_lock(Path({str(out)!r}), 'tinyminds train'):\n"
            "    print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match="in use by another tinyminds train"):
        train(make_config(prepared_data, out, max_steps=2))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (
        "tinyminds train" in (out / ".lock").read_text()
    )  # the dead holder's record is still there
    result = train(make_config(prepared_data, out, max_steps=2))
    assert result.steps == 2


def test_reproduce_dry_run_reads_while_a_run_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shakespeare_corpus: Path
) -> None:
    from tinyminds.reproduce.graph import run_lock

    out = tmp_path / "run"
    args = ["reproduce", "--corpus", str(shakespeare_corpus), "--out", str(out)]
    with run_lock(out):
        code, err = cli(capsys, *args, "--skip-evaluation")
        assert code == 2 and "is in use by another tinyminds reproduce" in err
        code = main([*args, "--skip-evaluation", "--dry-run"])
        assert code == 0 and "distilledgpt-44m" in capsys.readouterr().out


def _pids_writing_into(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the run's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(folder) in command and "tinyminds" in command:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_workers_die_with_their_launcher(prepared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        *torchrun_launcher(2),
        "-m",
        "tinyminds",
        "train",
        "gpt2-tiny",
        *overrides(prepared_data, out, max_steps=100_000, epochs=1000, checkpoint_every=0),
        "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(command, start_new_session=True, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "metrics.jsonl").exists():
        assert launcher.poll() is None, launcher.stderr.read() if launcher.stderr else ""
        time.sleep(0.2)
    workers = _pids_writing_into(out)
    workers = [pid for pid in workers if pid != launcher.pid]
    assert len(workers) == 2, workers
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group: the workers are not in it
    launcher.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
        for pid in workers:  # reap them if they are ours (they are the launcher's children)
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    alive = [p for p in workers if _is_running(p)]
    assert not alive, f"workers {alive} outlived their launcher"
    # The folder is free again: a --resume can take it at once.
    with folder_lock(out, "test"):
        pass


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- checkpoints: integrity, full disk --------------------------------------------------------------


def test_a_corrupt_checkpoint_is_named_and_the_previous_one_offered(
    prepared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make_config(prepared_data, out, keep_checkpoints=3), objective=InterruptAfter(21))
    folders = checkpoint.checkpoint_folders(out / "checkpoints")
    assert [f.name for f in folders] == ["step-00000010", "step-00000020"]
    state = folders[-1] / "state.pt"
    size = state.stat().st_size
    with state.open("r+b") as handle:  # overwrite bytes in the middle, same size
        handle.seek(size // 2)
        handle.write(b"\xff" * 64)
    assert state.stat().st_size == size
    with pytest.raises(UserError) as refused:
        train(make_config(prepared_data, out, keep_checkpoints=3), resume=True)
    message = str(refused.value)
    assert f"checkpoint {folders[-1]} is corrupt (state.pt does not match its checksum)" in message
    assert "the previous checkpoint step-00000010 is intact" in message
    shutil.rmtree(folders[-1])
    result = train(make_config(prepared_data, out, keep_checkpoints=3), resume=True)
    assert result.steps == SETTINGS["max_steps"]


def _torch_save_failing_like_a_full_disk(real_save: object, on_call: int) -> object:
    """A ``torch.save`` that, on its ``on_call``-th state.pt, writes part of it and fails as torch
    fails on a full disk (a RuntimeError from its C++ writer, not an OSError)."""
    calls = {"state": 0}

    def save(obj: object, path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("state.pt"):
            calls["state"] += 1
            if calls["state"] == on_call:
                Path(str(path)).write_bytes(b"partial")
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
                )
        real_save(obj, path, *args, **kwargs)  # type: ignore[operator]

    return save


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(
    prepared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        checkpoint.torch, "save", _torch_save_failing_like_a_full_disk(torch.save, 2)
    )
    out = tmp_path / "run"
    code, err = cli(capsys, "train", "gpt2-tiny", *overrides(prepared_data, out), "-q")
    assert code == 2 and err.count("\n") == 1, err
    assert "could not write checkpoint" in err and f"the disk of {out / 'checkpoints'}" in err
    assert "MB free, about" in err and "MB needed" in err and "step-00000010 is kept" in err
    assert [f.name for f in checkpoint.checkpoint_folders(out / "checkpoints")] == ["step-00000010"]
    assert not list((out / "checkpoints").glob(".step-*"))


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A real, tiny file system (tmpfs) mounted at ``folder``; skips where mounting is not allowed
    (it needs root, as on the project's CI machine)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs here (needs root): the real full-disk check skipped"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_real_full_disk_during_a_checkpoint(prepared_data: Path, tmp_path: Path) -> None:
    # gpt2-tiny's checkpoint (weights + Adam) is about 7 MB: 10 MB holds one, not two.
    with small_disk(tmp_path / "disk", "10m") as disk:
        out = disk / "run"
        with pytest.raises(UserError) as refused:
            train(make_config(prepared_data, out, keep_checkpoints=2))
        message = str(refused.value)
        assert f"the disk of {out / 'checkpoints'} (mount {disk}) is full" in message, message
        assert "step-00000010 is kept" in message
        assert [f.name for f in checkpoint.checkpoint_folders(out / "checkpoints")] == [
            "step-00000010"
        ]
        assert not list((out / "checkpoints").glob(".step-*"))
        assert checkpoint.verify(out / "checkpoints" / "step-00000010") is None


# --- resume: moved folders, identical logs ---------------------------------------------------------


def test_a_moved_run_folder_resumes(prepared_data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    with one_thread(), pytest.raises(KeyboardInterrupt):
        train(make_config(prepared_data, first), objective=InterruptAfter(15))
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    with one_thread():
        result = train(make_config(prepared_data, moved), resume=True)
    assert result.steps == SETTINGS["max_steps"]


def test_logged_losses_after_a_resume_equal_the_uninterrupted_run(
    prepared_data: Path, tmp_path: Path
) -> None:
    # checkpoint_every (10) is not a multiple of log_every (4): the checkpoint at step 10 falls
    # inside the window of steps 9-12.
    reference = tmp_path / "reference"
    with one_thread():
        train(make_config(prepared_data, reference))
    out = tmp_path / "resumed"
    with one_thread(), pytest.raises(KeyboardInterrupt):
        train(make_config(prepared_data, out), objective=InterruptAfter(15))
    with one_thread():
        train(make_config(prepared_data, out), resume=True)
    assert train_records(out) == train_records(reference)
    assert list(train_records(out)) == [4, 8, 12, 16, 20, 24]


def test_config_dataclasses_stay_plain() -> None:
    # Ranges live in the types; the dataclasses themselves build and copy as before.
    config = TrainConfig(model="gpt2-tiny")
    assert dataclasses.replace(config, lr=1e-3).lr == 1e-3
    with pytest.raises(UserError, match=r"key 'lr' is 0\.0"):
        dataclasses.replace(config, lr=0.0)
