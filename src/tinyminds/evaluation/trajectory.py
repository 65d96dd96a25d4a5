"""`tinyminds trajectory`: score every word-milestone checkpoint of a run, draw the learning curve.

A run trained with ``milestones=babylm-2025`` (or custom) holds ``RUN/milestones/chck_{N}M``
model folders (`training.milestones`). This scores each on a zero-shot suite (by default the
BabyLM 2025 fast suite, the one the 2025 pipeline runs on intermediate checkpoints), reading the
task files and the tokenizer once for all of them, and writes into ``OUT`` (default
``RUN/trajectory``):

- ``chck_{N}M.json`` and ``.pairs.jsonl``: each checkpoint's results, as `tinyminds evaluate`
  writes them; a checkpoint whose complete results are there is not scored again (a stopped sweep
  resumes, a longer run adds its new checkpoints only);
- ``trajectory.json``: words seen and every task's headline score per checkpoint;
- ``trajectory.md``: the same as a table;
- ``trajectory.png``: score against words seen, one line per task (accuracies on the left;
  WUG's Spearman rho and reading's R^2 improvement, x 100, on the right).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyminds.console import info
from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import SUITES, TASKS
from tinyminds.files import folder_lock, to_json, write_text_atomic
from tinyminds.training.milestones import Milestone, saved_milestones

LABELS = {
    **{name: fmt.label for name, fmt in TASKS.items()},
    "entity_tracking": "Entity tracking",
    "entity_tracking_fast": "Entity tracking (fast)",
    "wug_adj": "WUG adjectives (rho)",
    "reading": "Reading (R2 gain)",
}


@dataclass
class TrajectoryFiles:
    rows: list[dict[str, Any]]
    """Per checkpoint: name, milestone_words, words_seen, scores (task -> score x 100)."""
    json_path: Path
    markdown_path: Path
    png_path: Path
    markdown: str


def headline(task_result: dict[str, Any]) -> float:
    """A task's headline score x 100: its accuracy, else its score (rho, R^2 improvement)."""
    value = task_result.get("accuracy", task_result.get("score"))
    return 100 * float(value) if value is not None else math.nan


def _tokenizer_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = folder / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def _finished(path: Path, milestone: Milestone) -> dict[str, Any] | None:
    """The results document at ``path`` when it is complete and is this checkpoint's."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        return None
    model = document["model"]
    same = (
        model.get("path") == str(milestone.folder.resolve())
        and model.get("words_seen") == milestone.words_seen
    )
    return document if document.get("complete") and same else None


def trajectory(
    run_dir: Path,
    data: list[Path],
    out_dir: Path | None = None,
    *,
    suite: str = "babylm-2025-fast",
    batch_size: int = 64,
    device: str = "auto",
) -> TrajectoryFiles:
    """Score every milestone checkpoint of ``run_dir`` on ``suite`` and write the trajectory."""
    from tinyminds.evaluation.zero_shot import (
        evaluate,
        load_tokenizer,
        load_zero_shot_data,
        select_tasks,
    )

    if suite not in SUITES:
        raise UserError(f"--suite {suite!r}; choose one of {', '.join(SUITES)}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    milestones = saved_milestones(run_dir)
    if not milestones:
        raise UserError(
            f"{run_dir}: no word-milestone checkpoints (milestones/chck_*M); train with "
            "milestones=babylm-2025 (or milestones=custom milestone_words=...)"
        )
    out_dir = out_dir or run_dir / "trajectory"
    suite_tasks, convention = SUITES[suite]
    with folder_lock(out_dir, "tinyminds trajectory"):
        tasks, skipped = select_tasks(list(suite_tasks), data, skip_missing=True)
        zero_shot = load_zero_shot_data(tasks, data, skipped)  # read and checked once
        tokenizer, tokenizer_hash = None, None
        rows = []
        for milestone in milestones:
            results = out_dir / f"{milestone.name}.json"
            document = _finished(results, milestone)
            if document is None:
                this_hash = _tokenizer_hash(milestone.folder)
                if this_hash != tokenizer_hash:  # one run's checkpoints share one tokenizer
                    tokenizer, tokenizer_hash = load_tokenizer(milestone.folder), this_hash
                info(f"{milestone.name}: scoring on {suite}")
                document = evaluate(
                    milestone.folder,
                    tasks,
                    data,
                    out_dir,
                    name=milestone.name,
                    batch_size=batch_size,
                    device=device,
                    convention=convention,
                    zero_shot=zero_shot,
                    tokenizer=tokenizer,
                ).summary
            else:
                info(f"{milestone.name}: already scored ({results})")
            rows.append(
                {
                    "name": milestone.name,
                    "milestone_words": milestone.milestone_words,
                    "words_seen": milestone.words_seen,
                    "scores": {task: headline(document["tasks"][task]) for task in tasks},
                    "seconds": document.get("seconds"),
                }
            )
        record = {
            "run": str(run_dir.resolve()),
            "suite": suite,
            "convention": convention,
            "tasks": tasks,
            "skipped": skipped,
            "checkpoints": rows,
        }
        json_path = out_dir / "trajectory.json"
        write_text_atomic(json_path, to_json(record) + "\n")
        markdown = trajectory_table(rows, tasks, suite)
        markdown_path = out_dir / "trajectory.md"
        write_text_atomic(markdown_path, markdown + "\n")
        png_path = trajectory_chart(rows, tasks, out_dir / "trajectory.png", run_dir.name)
    return TrajectoryFiles(rows, json_path, markdown_path, png_path, markdown)


def trajectory_table(rows: list[dict[str, Any]], tasks: list[str], suite: str) -> str:
    """One row per checkpoint: words seen, then each task's score (x 100)."""
    lines = [
        f"Scores x 100 on {suite} (accuracy in %; WUG: Spearman rho; reading: R^2 improvement).",
        "",
        "| checkpoint | words seen | " + " | ".join(LABELS.get(t, t) for t in tasks) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in tasks) + " |",
    ]
    for row in rows:
        words = row["words_seen"]
        shown = f"{words:,}" if words is not None else "?"
        scores = " | ".join(f"{row['scores'][t]:.2f}" for t in tasks)
        lines.append(f"| {row['name']} | {shown} | {scores} |")
    return "\n".join(lines)


def trajectory_chart(rows: list[dict[str, Any]], tasks: list[str], path: Path, title: str) -> Path:
    """Score against words seen (millions), one line per task; accuracies and the other metrics
    on two panels (their scales differ)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    accuracy_tasks = [t for t in tasks if t not in ("wug_adj", "reading")]
    other_tasks = [t for t in tasks if t in ("wug_adj", "reading")]
    panels = [(accuracy_tasks, "accuracy (%)")] + ([(other_tasks, "x 100")] if other_tasks else [])
    figure = Figure(figsize=(5.2 * len(panels), 4.0), dpi=120)
    FigureCanvasAgg(figure)
    xs = [
        (row["words_seen"] if row["words_seen"] is not None else row["milestone_words"]) / 1e6
        for row in rows
    ]
    log_x = len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 10
    for index, (shown, ylabel) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for number, task in enumerate(shown):
            ys = [row["scores"][task] for row in rows]
            axes.plot(
                xs, ys, marker="o", markersize=3, label=LABELS.get(task, task), color=f"C{number}"
            )
        if ylabel.startswith("accuracy"):
            axes.axhline(50, color="grey", linestyle="--", linewidth=0.8)
        else:
            axes.axhline(0, color="grey", linestyle="--", linewidth=0.8)
        if log_x:
            axes.set_xscale("log")
        axes.set_xlabel("words seen (millions)")
        axes.set_ylabel(ylabel)
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    figure.suptitle(f"Learning trajectory: {title}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
