"""Running a sweep: an Optuna study stored in SWEEP_DIR, each trial an ordinary tinyminds run.

Layout of SWEEP_DIR::

    journal.log          Optuna's journal file storage (unless an RDB storage URL is given)
    space.yaml           the search space the sweep was started with (a different one is refused)
    trials/<key>/        one run folder per parameter combination (key: a hash of the values), so a
                         trial that is run again (after an interruption) resumes from its checkpoint
    workers/<id>.lock    held by each live worker: a RUNNING trial whose worker's lock is free was
                         interrupted (kill -9, a lost machine); it is marked failed and its values
                         queued again
    .sweep.lock          held for a moment while a worker reclaims interrupted trials and asks for
                         the next one
    report.md, *.png     written when a worker finds nothing left to do (`tinyminds.sweep.report`)

Workers on one machine (``--workers N``) and on several machines sharing SWEEP_DIR's filesystem run
the same loop; the study decides which trial each one runs. A trial that fails (a diverged loss, a
bad combination) is recorded with its one-line reason and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tinyminds.console import info
from tinyminds.errors import UserError
from tinyminds.files import check_not_a_file, write_text_atomic
from tinyminds.sweep.space import SearchSpace, describe

STUDY_NAME = "tinyminds-sweep"
JOURNAL = "journal.log"
SPACE_COPY = "space.yaml"
SWEEP_LOCK = ".sweep.lock"
INTERRUPTED = "interrupted"
"""The reason recorded on a trial whose worker died; such trials do not count towards the budget."""


def open_study(space: SearchSpace, sweep_dir: Path, storage: str | None = None) -> optuna.Study:
    """The sweep's study (created on first use), refusing a SWEEP_DIR started with another space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    backend = storage or JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    if space.sampler == "grid":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=space.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=space.seed, constant_liar=True)
    study = optuna.create_study(
        storage=backend,
        study_name=STUDY_NAME,
        directions=space.directions,
        sampler=sampler,
        load_if_exists=True,
    )
    text = space.path.read_text(encoding="utf-8")
    with sweep_lock(sweep_dir):
        saved = study.user_attrs.get("space")
        if saved is None:
            study.set_user_attr("space", text)
            study.set_user_attr("metrics", list(space.metrics))
            write_text_atomic(sweep_dir / SPACE_COPY, text)
            if space.sampler == "grid":  # the grid is queued once, by the first worker
                for values in space.grid():
                    study.enqueue_trial(values)
        elif saved != text:
            raise UserError(
                f"{sweep_dir} holds a sweep of another search space ({sweep_dir / SPACE_COPY}); "
                "choose another --out, or start it with that file"
            )
    return study


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """The short critical section of every worker (reclaim, ask) and of the report."""
    with (sweep_dir / SWEEP_LOCK).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def worker_lock(sweep_dir: Path, worker: str) -> Iterator[None]:
    """Held for the worker's life: others tell a dead worker by its free lock."""
    folder = sweep_dir / "workers"
    folder.mkdir(exist_ok=True)
    with (folder / f"{worker}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def worker_alive(sweep_dir: Path, worker: str) -> bool:
    path = sweep_dir / "workers" / f"{worker}.lock"
    if not path.is_file():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    found: dict[str, BaseDistribution] = {}
    for p in space.params:
        if not p.is_range:
            found[p.key] = CategoricalDistribution(list(p.values))
        elif p.integer:
            found[p.key] = IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log)
        else:
            found[p.key] = FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log)
    return found


def reclaim_interrupted(study: optuna.Study, sweep_dir: Path) -> list[int]:
    """Fail the RUNNING trials whose worker is gone and queue their values again (call under
    `sweep_lock`); their numbers."""
    reclaimed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or worker_alive(sweep_dir, worker):
            continue
        # A frozen trial has no setter; Optuna's Trial over the same id writes to the storage.
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("reason", INTERRUPTED)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
        reclaimed.append(trial.number)
    return reclaimed


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` uses up the budget: finished (not interrupted) or running."""
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("reason") != INTERRUPTED
    return trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)


def next_trial(study: optuna.Study, space: SearchSpace, sweep_dir: Path, worker: str) -> Any:
    """The next trial for ``worker`` (a queued one first), or None when the sweep has no more."""
    with sweep_lock(sweep_dir):
        reclaimed = reclaim_interrupted(study, sweep_dir)
        if reclaimed:
            info(f"sweep: trials {', '.join(map(str, reclaimed))} were interrupted; queued again")
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and (space.sampler == "grid" or sum(map(counted, trials)) >= space.trials):
            return None
        trial = study.ask(distributions(space))
        trial.set_user_attr("worker", worker)
        return trial


def trial_folder(sweep_dir: Path, values: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
    return sweep_dir / "trials" / key


@dataclass
class Outcome:
    values: list[float] | None
    """The metrics in the space's order; None when the trial failed."""
    reason: str = ""
    attrs: dict[str, Any] | None = None


def run_trial(space: SearchSpace, values: dict[str, Any], folder: Path) -> Outcome:
    """Train (or distill) one trial into ``folder`` (resuming what is there) and measure it."""
    from tinyminds.training.engine import TrainingDiverged

    try:
        config = space.config(values, folder)
        summary = _finished(folder) or _train(space, config)
        measured = {
            "dev_ce": summary["best_val_ce"],
            "parameters": summary["parameters"],
            "tokens_per_second": summary["tokens_per_second"],
        }
        if space.evaluation_tasks:
            measured.update(_evaluate(space, folder))
    except (UserError, TrainingDiverged) as error:
        return Outcome(None, " ".join(str(error).split()))
    except Exception as error:  # a trial's crash is recorded; the sweep goes on
        return Outcome(None, f"{type(error).__name__}: {' '.join(str(error).split())}")
    attrs = {
        "run_dir": str(folder),
        "parameters": summary["parameters"],
        "tokens_per_second": summary["tokens_per_second"],
        "seconds": summary["seconds"],
        "dev_ce": summary["best_val_ce"],
        **{task: measured[task] for task in space.evaluation_tasks},
    }
    return Outcome([float(measured[m]) for m in space.metrics], attrs=attrs)


def _finished(folder: Path) -> dict[str, Any] | None:
    """The summary of a run that finished earlier (a worker killed before recording it)."""
    path = folder / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _train(space: SearchSpace, config: Any) -> dict[str, Any]:
    if space.kind == "distill":
        from tinyminds.training.objectives.distillation import distill

        distill(config, resume=True)  # resume=True: a fresh folder starts, a killed one continues
    else:
        from tinyminds.training.engine import train

        train(config, resume=True)
    summary = _finished(Path(config.out))
    assert summary is not None, "a finished run writes summary.json"
    return summary


def _evaluate(space: SearchSpace, folder: Path) -> dict[str, float]:
    from tinyminds.evaluation.zero_shot import evaluate

    assert space.eval_data is not None
    result = evaluate(
        folder / "model", space.evaluation_tasks, [space.eval_data], folder / "eval", name="model"
    )
    document = json.loads(result.json_path.read_text(encoding="utf-8"))
    return {
        task: 100 * value.get("accuracy", value.get("score", float("nan")))
        for task, value in document["tasks"].items()
    }


def run_worker(space: SearchSpace, sweep_dir: Path, storage: str | None = None) -> int:
    """Run trials until the study has none left; the number this worker ran."""
    study = open_study(space, sweep_dir, storage)
    worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ran = 0
    with worker_lock(sweep_dir, worker):
        while (trial := next_trial(study, space, sweep_dir, worker)) is not None:
            values = dict(trial.params)
            folder = trial_folder(sweep_dir, values)
            info(f"sweep: trial {trial.number} ({describe(values)}) -> {folder}")
            started = time.perf_counter()
            outcome = run_trial(space, values, folder)
            trial.set_user_attr("wall_seconds", time.perf_counter() - started)
            if outcome.values is None:
                trial.set_user_attr("reason", outcome.reason)
                study.tell(trial, state=TrialState.FAIL)
                info(f"sweep: trial {trial.number} failed: {outcome.reason}")
            else:
                for key, value in (outcome.attrs or {}).items():
                    trial.set_user_attr(key, value)
                study.tell(trial, outcome.values)
            ran += 1
    return ran


def run_sweep(
    space: SearchSpace,
    sweep_dir: Path,
    *,
    workers: int = 1,
    storage: str | None = None,
    threads: int | None = None,
) -> Path:
    """Run the sweep with ``workers`` processes on this machine; write the report; its path."""
    from tinyminds.sweep.report import write_report

    check_not_a_file(sweep_dir, "--out")
    open_study(space, sweep_dir, storage)  # refuse another space before any worker starts
    if workers == 1:
        if threads:
            import torch

            torch.set_num_threads(threads)
        run_worker(space, sweep_dir, storage)
    else:
        per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
        command = [sys.executable, "-m", "tinyminds.sweep.worker", str(space.path), str(sweep_dir)]
        command += ["--threads", str(per_worker)] + (["--storage", storage] if storage else [])
        children = [subprocess.Popen(command, preexec_fn=_die_with_parent) for _ in range(workers)]
        codes = [child.wait() for child in children]
        if any(codes):
            raise UserError(f"a sweep worker stopped with status {max(codes)}; run again to go on")
    return write_report(space, sweep_dir, storage)


def _die_with_parent() -> None:
    from tinyminds.training.distributed import die_with_parent

    die_with_parent()
