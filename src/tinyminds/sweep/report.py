"""A sweep's report: ``report.md`` (every trial, the best or the Pareto front, what was optimised,
the machine), ``pareto.png`` (model size against the first metric) and ``effects.png`` (each
parameter's effect on the first metric); and the one-screen ``--status``."""

from __future__ import annotations

import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tinyminds.errors import UserError
from tinyminds.files import write_text_atomic
from tinyminds.sweep.runner import INTERRUPTED, JOURNAL, open_study, sweep_lock
from tinyminds.sweep.space import METRICS, SearchSpace, describe

REPORT = "report.md"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "/")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _state(trial: FrozenTrial) -> str:
    reason = trial.user_attrs.get("reason")
    if trial.state == TrialState.FAIL and reason == INTERRUPTED:
        return "interrupted (run again)"
    return trial.state.name.lower()


def trial_rows(space: SearchSpace, trials: list[FrozenTrial]) -> tuple[list[str], list[list[Any]]]:
    """The trial table: number, state, parameters, metrics, size, speed, time, reason."""
    keys = [p.key for p in space.params]
    extra = [m for m in ("dev_ce", "parameters", "tokens_per_second") if m not in space.metrics]
    header = ["trial", "state", *keys, *space.metrics, *extra, "wall s", "reason"]
    rows = []
    for trial in trials:
        values = trial.values or [None] * len(space.metrics)
        rows.append(
            [
                trial.number,
                _state(trial),
                *(trial.params.get(k) for k in keys),
                *values,
                *(trial.user_attrs.get(m) for m in extra),
                trial.user_attrs.get("wall_seconds"),
                ""
                if trial.user_attrs.get("reason") == INTERRUPTED
                else trial.user_attrs.get("reason"),
            ]
        )
    return header, rows


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """The points no other point beats on both coordinates (both minimised), by the first."""
    front = []
    for x, y, item in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y, item))
    return front


def _sign(space: SearchSpace) -> float:
    return 1.0 if METRICS.get(space.metrics[0], "maximize") == "minimize" else -1.0


def _charts(space: SearchSpace, complete: list[FrozenTrial], sweep_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, sign, written = space.metrics[0], _sign(space), []
    points = [(t.user_attrs["parameters"], sign * t.values[0], t) for t in complete]
    if points:
        front = pareto_front(points)
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.scatter([p[0] for p in points], [sign * p[1] for p in points], c="0.6", label="trials")
        axes.plot([p[0] for p in front], [sign * p[1] for p in front], "o-", c="C3", label="front")
        for x, y, trial in front:
            axes.annotate(str(trial.number), (x, sign * y), fontsize=8)
        axes.set_xscale("log")
        axes.set_xlabel("parameters")
        axes.set_ylabel(metric)
        axes.set_title("model size against quality (Pareto front)")
        axes.legend()
        figure.tight_layout()
        figure.savefig(sweep_dir / "pareto.png", dpi=120)
        plt.close(figure)
        written.append("pareto.png")
        figure, grid = plt.subplots(1, len(space.params), figsize=(3.2 * len(space.params), 3))
        for axes, param in zip(getattr(grid, "flat", [grid]), space.params, strict=False):
            xs = [t.params[param.key] for t in complete]
            labels = sorted({str(x) for x in xs}, key=lambda s: (len(s), s))
            numeric = all(isinstance(x, int | float) for x in xs)
            positions = xs if numeric else [labels.index(str(x)) for x in xs]
            axes.scatter(positions, [t.values[0] for t in complete], c="C0")
            if not numeric:
                axes.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
            elif param.log:
                axes.set_xscale("log")
            axes.set_xlabel(param.key)
            axes.set_ylabel(metric)
        figure.tight_layout()
        figure.savefig(sweep_dir / "effects.png", dpi=120)
        plt.close(figure)
        written.append("effects.png")
    return written


def write_report(space: SearchSpace, sweep_dir: Path, storage: str | None = None) -> Path:
    """Write ``report.md`` and the charts from the study as it stands; the report's path."""
    study = open_study(space, sweep_dir, storage)
    with sweep_lock(sweep_dir):
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        lines = [
            f"# Sweep {sweep_dir.name}",
            "",
            f"Search space: `{space.path.name}` (copied to `space.yaml`); base recipe "
            f"`{space.recipe}` ({space.kind}); sampler {space.sampler}"
            + (f" ({space.trials} trials, seed {space.seed})" if space.sampler == "tpe" else "")
            + f"; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            f"Machine: {platform.node()}, {platform.machine()}, Python {platform.python_version()}, "
            f"optuna {optuna.__version__}.",
            "",
            *_what_was_optimised(space),
            "",
            _progress(space, trials),
            "",
            "## Trials",
            "",
        ]
        header, rows = trial_rows(space, trials)
        lines += _table(header, rows)
        lines += ["", *_best(space, study, complete)]
        charts = _charts(space, complete, sweep_dir)
        if charts:
            lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in charts]
        path = sweep_dir / REPORT
        write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _what_was_optimised(space: SearchSpace) -> list[str]:
    goals = ", ".join(
        f"{m} ({'lower' if d == 'minimize' else 'higher'} is better)"
        for m, d in zip(space.metrics, space.directions, strict=True)
    )
    lines = [f"Optimised: {goals}."]
    tests = space.evaluation_tasks
    if tests:
        lines.append(
            f"**Warning: this sweep tuned on a test set ({', '.join(tests)}).** The best trial's "
            "score there is optimistic; choose on dev_ce (validation) and report the test sets once."
        )
    else:
        lines.append("Chosen on dev cross-entropy (validation) only; no test set was used.")
    return lines


def _progress(space: SearchSpace, trials: list[FrozenTrial]) -> str:
    states = Counter(_state(t) for t in trials)
    budget = space.trials
    done = states["complete"] + states["fail"]
    return f"Progress: {done} of {budget} trials finished ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})."


def _best(space: SearchSpace, study: optuna.Study, complete: list[FrozenTrial]) -> list[str]:
    if not complete:
        return ["No trial has finished yet."]
    if len(space.metrics) == 1:
        best = study.best_trial
        return [
            f"**Best trial: {best.number}** ({describe(best.params)}): "
            f"{space.metrics[0]} {best.values[0]:.4g}, {best.user_attrs.get('parameters', 0):,} "
            f"parameters, run folder `{best.user_attrs.get('run_dir', '')}`."
        ]
    front = sorted(study.best_trials, key=lambda t: t.number)
    return ["**Pareto front** (no trial is better on every metric):", ""] + [
        f"- trial {t.number} ({describe(t.params)}): "
        + ", ".join(f"{m} {v:.4g}" for m, v in zip(space.metrics, t.values, strict=True))
        for t in front
    ]


def status_text(space: SearchSpace, sweep_dir: Path, storage: str | None = None) -> str:
    """Progress, the running trials and the best so far (``tinyminds sweep --status``)."""
    if storage is None and not (sweep_dir / JOURNAL).is_file():
        raise UserError(f"{sweep_dir} holds no sweep (no {JOURNAL})")
    study = open_study(space, sweep_dir, storage)
    trials = study.get_trials(deepcopy=False)
    lines = [_progress(space, trials)]
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            lines.append(
                f"running: trial {trial.number} ({describe(trial.params)}) on "
                f"{trial.user_attrs.get('worker', '?')}"
            )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        lines += _best(space, study, complete)
    failed = [
        t
        for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get("reason") != INTERRUPTED
    ]
    lines += [f"failed: trial {t.number}: {t.user_attrs.get('reason', '')}" for t in failed]
    return "\n".join(lines)
