"""`tinyminds sweep`: the search space's checks, the journal, kill -9 and resume, two workers, a
failed trial, the TPE sampler, and the report read back against the study (tiny GPT-2 trials of a
few steps on the embedded corpus)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tinyminds.cli import main
from tinyminds.errors import UserError
from tinyminds.models.zoo import get_spec
from tinyminds.sweep.report import pareto_front
from tinyminds.sweep.runner import INTERRUPTED, JOURNAL, STUDY_NAME, open_study, trial_folder
from tinyminds.sweep.space import load_space

BASE = """\
recipe: gpt2-tiny
set:
  data: {data}
  max_steps: {steps}
  eval_chunks: 16
  checkpoint_every: {checkpoint_every}
  log_every: 2
"""


def write_space(folder: Path, data: Path, params: str, steps: int = 4, **extra: str) -> Path:
    text = BASE.format(data=data, steps=steps, checkpoint_every=max(2, steps // 4))
    text += "".join(f"{key}: {value}\n" for key, value in extra.items())
    path = folder / "space.yaml"
    path.write_text(text + "params:\n" + params, encoding="utf-8")
    return path


def study_of(sweep_dir: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def report_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """The trial table of report.md, parsed back."""
    lines = (sweep_dir / "report.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("## Trials") + 2
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def sweep_command(space: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tinyminds.cli", "sweep", str(space), "--out", str(out), *extra]


def test_grid_sweep_records_failures_and_reports_every_trial(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = "  lr: [1.0e-3, 3.0e-3]\n  init_from: [null, {}]\n".format(tmp_path / "no-model")
    space = write_space(tmp_path, prepared_data, params)
    out = tmp_path / "sweep"
    assert main(["sweep", str(space), "--out", str(out)]) == 0
    study = study_of(out)
    trials = study.get_trials()
    assert len(trials) == 4
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.params["lr"] for t in complete} == {1e-3, 3e-3}
    assert all(t.params["init_from"] is None for t in complete)
    for trial in failed:  # recorded with its one-line reason; the sweep went on
        assert "not a Hugging Face model folder" in trial.user_attrs["reason"]
    for trial in complete:  # each trial is an ordinary run folder with its own summary
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert trial.values == [summary["best_val_ce"]]
    rows = report_rows(out)
    assert [int(r["trial"]) for r in rows] == [t.number for t in trials]
    for row, trial in zip(rows, trials, strict=True):
        assert row["state"] == trial.state.name.lower()
        assert float(row["lr"]) == trial.params["lr"]
        if trial.values:
            assert float(row["dev_ce"]) == pytest.approx(trial.values[0], rel=1e-3)
        else:
            assert row["reason"] == trial.user_attrs["reason"]
    best = min(complete, key=lambda t: t.values[0])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"**Best trial: {best.number}**" in report
    assert "Chosen on dev cross-entropy (validation) only" in report
    assert (out / "pareto.png").stat().st_size > 0 and (out / "effects.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "4 of 4 trials finished (2 complete, 2 fail)" in status
    # The same command again: nothing left, nothing rerun.
    assert main(["sweep", str(space), "--out", str(out)]) == 0
    assert len(study_of(out).get_trials()) == 4


def test_space_errors_name_the_key_before_anything_is_written(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "  lrr: [1.0e-3]\n": "'lrr' is not a key of train recipe gpt2-tiny",
        "  lr: {low: 1.0e-4, high: 1.0e-2}\n": "params.lr is a range",
        "  lr: [-1.0]\n": "'lr' is -1.0",
        "  model.heads: [3]\n": "not a multiple of heads 3",
        "  model.width: [64]\n": "'model.width' is not a key",
    }
    out = tmp_path / "sweep"
    for params, message in cases.items():
        space = write_space(tmp_path, prepared_data, params)
        assert main(["sweep", str(space), "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error and str(space) in error
        assert not out.exists()
    space = write_space(tmp_path, prepared_data, "  lr: [1.0e-3]\n", metrics="[blimp_fast_x]")
    with pytest.raises(UserError, match="unknown metric 'blimp_fast_x'"):
        load_space(space)
    space = write_space(tmp_path, prepared_data, "  lr: [1.0e-3]\n", metrics="[blimp]")
    with pytest.raises(UserError, match="needs eval_data"):
        load_space(space)


def test_kill_9_then_the_same_command_continues_without_rerunning(
    prepared_data: Path, tmp_path: Path
) -> None:
    params = "  lr: [1.0e-3, 2.0e-3, 3.0e-3]\n"
    space = write_space(tmp_path, prepared_data, params, steps=16)
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TINYMINDS_QUIET": "1"}
    process = subprocess.Popen(sweep_command(space, out), env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once the first trial is done and the second runs
        time.sleep(0.3)
        if not (out / JOURNAL).is_file():
            continue
        states = [t.state for t in study_of(out).get_trials()]
        if states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING in states:
            break
    else:
        pytest.fail("the sweep never reached its second trial")
    time.sleep(1.0)  # into the second trial's steps
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = study_of(out).get_trials()[0]
    first_summary = Path(first.user_attrs["run_dir"]) / "summary.json"
    finished_at = first_summary.stat().st_mtime_ns

    subprocess.run(sweep_command(space, out), env=env, check=True)
    trials = study_of(out).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert sorted(t.params["lr"] for t in complete) == [1e-3, 2e-3, 3e-3]  # each exactly once
    assert len(interrupted) == 1 and interrupted[0].user_attrs["reason"] == INTERRUPTED
    rerun = next(t for t in complete if t.params == interrupted[0].params)
    assert rerun.user_attrs["rerun_of"] == interrupted[0].number
    assert first_summary.stat().st_mtime_ns == finished_at  # the finished trial was not rerun
    # The rerun went into the interrupted trial's run folder (keyed by the values) and resumed.
    assert rerun.user_attrs["run_dir"] == str(trial_folder(out, interrupted[0].params))
    assert "interrupted (run again)" in (out / "report.md").read_text(encoding="utf-8")


def test_two_workers_share_one_journal(prepared_data: Path, tmp_path: Path) -> None:
    params = "  lr: [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]\n"
    space = write_space(tmp_path, prepared_data, params, steps=4)
    out = tmp_path / "sweep"
    env = {**os.environ, "TINYMINDS_QUIET": "1"}
    subprocess.run(sweep_command(space, out, "--workers", "2"), env=env, check=True)
    trials = study_of(out).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.params["lr"] for t in trials) == [1e-3, 2e-3, 3e-3, 4e-3]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert len(report_rows(out)) == 4


def test_tpe_sampler_samples_within_the_ranges(prepared_data: Path, tmp_path: Path) -> None:
    params = "  lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n  warmup_steps: {low: 0, high: 2}\n"
    space = write_space(tmp_path, prepared_data, params, sampler="tpe", trials="3", seed="1")
    out = tmp_path / "sweep"
    assert main(["sweep", str(space), "--out", str(out)]) == 0
    trials = study_of(out).get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        assert 1e-4 <= trial.params["lr"] <= 1e-2
        assert trial.params["warmup_steps"] in (0, 1, 2)


def test_another_space_in_the_same_folder_is_refused(prepared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    first = write_space(tmp_path, prepared_data, "  lr: [1.0e-3]\n", steps=2)
    assert main(["sweep", str(first), "--out", str(out)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    second = write_space(other, prepared_data, "  lr: [2.0e-3]\n", steps=2)
    with pytest.raises(UserError, match="holds a sweep of another search space"):
        open_study(load_space(second), out)


def test_resized_model_names() -> None:
    spec = get_spec("gpt2-small:hidden=192,layers=3")
    assert (spec.hidden, spec.layers, spec.intermediate, spec.heads) == (192, 3, 768, 4)
    assert get_spec("llama-small:layers=2").intermediate == get_spec("llama-small").intermediate
    with pytest.raises(UserError, match="SIZE=N"):
        get_spec("gpt2-small:depth=2")


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(1.0, 5.0, "a"), (2.0, 4.0, "b"), (3.0, 4.5, "c"), (4.0, 3.0, "d")]
    assert [item for _, _, item in pareto_front(points)] == ["a", "b", "d"]
