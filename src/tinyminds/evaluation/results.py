"""Decisions, aggregation and the files a zero-shot evaluation leaves behind.

Per model: ``NAME.json`` (every subtask's accuracy, n and ties; each task's unweighted mean over
its subtasks, as BabyLM reports it; model, parameter count, SHA-256 of every data file, version,
device, time) and ``NAME.pairs.jsonl`` (one line per pair with both scores, for paired comparisons
later). The pair file holds scores and indices only, never text, so EWoK's licensed items cannot
leak through it. With GLUE, the JSON gains a ``glue`` section (see `glue.run_glue`) and
``NAME.glue.jsonl`` holds every valid example's label and prediction (task, index; no text). All
files are rewritten atomically (temporary file + rename) after every finished task (every GLUE task
too): an error or an interruption in a later task keeps the earlier tasks' results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyminds.evaluation.glue_tasks import GLUE_TASKS
from tinyminds.evaluation.tasks import TASKS
from tinyminds.files import to_json, write_text_atomic


@dataclass
class SubtaskResult:
    """The decisions of one subtask (one JSONL file)."""

    name: str
    n: int
    correct: int
    ties: int
    """Pairs whose two scores are exactly equal; they count as correct (SPEC §4)."""
    file: str
    sha256: str

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


@dataclass
class TaskResult:
    """One task: its subtasks, and what it was scored with."""

    task: str
    subtasks: list[SubtaskResult]
    prefix_token: dict[str, Any] | None
    """The token empty contexts were replaced by (kind, token, id); None when none was needed."""
    seconds: float
    pairs: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Per-pair records (task, subtask, index, good, bad, correct, tie): scores only, no text."""
    sweep: dict[str, Any] | None = None
    """The 2025 temperature sweep (`scoring.sweep_record`), reported apart from T = 1."""

    @property
    def accuracy(self) -> float:
        """The unweighted mean of the subtask accuracies (a small paradigm counts as much as a large one)."""
        return sum(s.accuracy for s in self.subtasks) / len(self.subtasks)

    @property
    def n(self) -> int:
        return sum(s.n for s in self.subtasks)

    @property
    def ties(self) -> int:
        return sum(s.ties for s in self.subtasks)

    def to_json(self) -> dict[str, Any]:
        return {
            **({"temperature_sweep": self.sweep} if self.sweep else {}),
            "accuracy": self.accuracy,
            "subtask_count": len(self.subtasks),
            "n": self.n,
            "ties": self.ties,
            "prefix_token": self.prefix_token,
            "seconds": round(self.seconds, 3),
            "subtasks": {
                s.name: {
                    "accuracy": s.accuracy,
                    "n": s.n,
                    "correct": s.correct,
                    "ties": s.ties,
                    "file": s.file,
                    "sha256": s.sha256,
                }
                for s in self.subtasks
            },
        }


def decide(good: list[float], bad: list[float]) -> tuple[list[bool], list[bool]]:
    """(correct, tie) for each pair: correct when good >= bad, so a tie counts as correct."""
    correct = [g >= b for g, b in zip(good, bad, strict=True)]
    ties = [g == b for g, b in zip(good, bad, strict=True)]
    return correct, ties


def subtask_result(
    task: str,
    name: str,
    file: str,
    sha256: str,
    good: list[float],
    bad: list[float],
    records: list[dict[str, Any]],
) -> SubtaskResult:
    """Decide every pair of a subtask, append its per-pair records to ``records``, and count."""
    correct, ties = decide(good, bad)
    for index, (g, b, c, t) in enumerate(zip(good, bad, correct, ties, strict=True)):
        records.append(
            {
                "task": task,
                "subtask": name,
                "index": index,
                "good": g,
                "bad": b,
                "correct": c,
                "tie": t,
            }
        )
    return SubtaskResult(name, len(good), sum(correct), sum(ties), file, sha256)


class ResultsWriter:
    """Keeps ``NAME.json`` and ``NAME.pairs.jsonl`` (and ``NAME.glue.jsonl`` with GLUE) in
    ``out_dir`` up to date, task by task."""

    def __init__(self, out_dir: Path, name: str, header: dict[str, Any], planned: list[str]):
        self.out_dir = out_dir
        self.json_path = out_dir / f"{name}.json"
        self.pairs_path = out_dir / f"{name}.pairs.jsonl"
        self.predictions_path = out_dir / f"{name}.glue.jsonl"
        self.header = header
        self.planned = planned
        self.tasks: dict[str, TaskResult] = {}
        self.glue: dict[str, Any] | None = None

    def add(self, result: TaskResult) -> None:
        """Record a finished task and rewrite both files (atomically) with every task so far."""
        self.tasks[result.task] = result
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pairs = "".join(
            to_json(record, indent=None) + "\n"
            for task in self.tasks.values()
            for record in task.pairs
        )
        write_text_atomic(self.pairs_path, pairs)
        write_text_atomic(self.json_path, to_json(self.summary()) + "\n")

    def add_glue(self, section: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        """Record the GLUE section so far and every prediction; rewrite the JSON and predictions."""
        self.glue = {**section, "predictions_file": self.predictions_path.name}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.predictions_path, "".join(to_json(p, indent=None) + "\n" for p in predictions)
        )
        write_text_atomic(self.json_path, to_json(self.summary()) + "\n")

    def summary(self) -> dict[str, Any]:
        """The JSON document: the header, every finished task, totals, and what is still missing."""
        finished = set(self.tasks)
        if self.glue is not None and not self.glue["pending"]:
            finished.add("glue")
        seconds = sum(task.seconds for task in self.tasks.values())
        document = {
            **self.header,
            "complete": all(task in finished for task in self.planned),
            "pending": [task for task in self.planned if task not in finished],
            "ties": sum(task.ties for task in self.tasks.values()),
            "seconds": round(seconds + (self.glue["seconds"] if self.glue else 0.0), 3),
            "pairs_file": self.pairs_path.name if set(self.planned) - {"glue"} else None,
            "tasks": {name: task.to_json() for name, task in self.tasks.items()},
        }
        if self.glue is not None:
            document["glue"] = self.glue
        return document


def markdown_table(summary: dict[str, Any]) -> str:
    """The task scores of one results document as a Markdown table (accuracy in percent)."""
    lines = [
        "| task | accuracy (%) | subtasks | pairs | ties | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    others = []
    for name, task in summary["tasks"].items():
        label = TASKS[name].label if name in TASKS else name
        if "accuracy" not in task:
            others.append((label, task))
            continue
        lines.append(
            f"| {label} | {100 * task['accuracy']:.2f} | {task['subtask_count']} | "
            f"{task['n']:,} | {task['ties']} | {task['seconds']:.1f} |"
        )
    if not others:
        return "\n".join(lines)
    if len(lines) == 2:
        lines = []
    else:
        lines.append("")
    lines += [
        "| task | metric | score (x 100) | items | seconds |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for label, task in others:
        lines.append(
            f"| {label} | {METRIC_LABELS.get(task['metric'], task['metric'])} | "
            f"{100 * task['score']:.2f} | {task['n']:,} | {task['seconds']:.1f} |"
        )
        if "self_paced_reading" in task:
            lines.append(
                f"| {label} | self-paced reading: R^2 improvement | "
                f"{100 * task['self_paced_reading']:.2f} | {task['n']:,} | |"
            )
    return "\n".join(lines)


METRIC_LABELS = {
    "spearman_rho": "Spearman rho (q of -ity vs human ratio)",
    "r2_improvement": "eye tracking: R^2 improvement (mean of 4 measures)",
}


def glue_markdown_table(glue: dict[str, Any]) -> str:
    """The GLUE section as a Markdown table: every task's score beside its majority-class baseline
    (in percent; MCC times 100 too), missing and pending tasks as such, and the macro average."""
    lines = [
        "| GLUE task | metric | score (%) | majority baseline (%) | train examples | best epoch | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, task in glue["tasks"].items():
        label = GLUE_TASKS[name].label if name in GLUE_TASKS else name
        metric = {"mcc": "MCC", "f1": "F1"}.get(task["metric"], task["metric"])
        baseline = "" if task["baseline"] is None else f"{100 * task['baseline']:.2f}"
        if task.get("baseline_from") == "valid":
            baseline += " (valid labels)"
        if "missing" in task:
            lines.append(f"| {label} | {metric} | missing: {task['missing']} | {baseline} | | | |")
        elif "score" not in task:
            lines.append(f"| {label} | {metric} | pending | {baseline} | | | |")
        elif "model" in task:
            lines.append(
                f"| {label} | {metric} | {100 * task['score']:.2f} | {baseline} | "
                f"({task['model']} model) | {task['best_epoch']} | |"
            )
        else:
            lines.append(
                f"| {label} | {metric} | {100 * task['score']:.2f} | {baseline} | "
                f"{task['train_examples']:,} of {task['train_file_examples']:,} | "
                f"{task['best_epoch']} of {task['epochs']} | {task['seconds']:.1f} |"
            )
    macro = glue["macro"]
    if macro["score"] is not None:
        if glue.get("recipe_name") == "babylm-2025":
            title = f"macro average ({macro['covered']} of the 2025 suite's {macro['of']} tasks)"
        elif macro["complete"]:
            title = f"macro average ({macro['of']} tasks, no CoLA, no MNLI-mm)"
        else:
            title = (
                f"macro average over {macro['covered']} of {macro['of']} tasks only "
                f"({', '.join(macro['tasks'])})"
            )
        lines.append(
            f"| {title} | | {100 * macro['score']:.2f} | {100 * macro['baseline']:.2f} | | | |"
        )
    return "\n".join(lines)


def report(summary: dict[str, Any]) -> str:
    """What `tinyminds evaluate` prints: the model, the prefix token used, and the tables."""
    model = summary["model"]
    details = [f"{model['parameters']:,} parameters", summary["device"]]
    if summary.get("max_items"):
        details.append(f"at most {summary['max_items']} pairs per subtask")
    glue = summary.get("glue")
    if glue and glue["overrides"]:
        changed = ", ".join(f"{key} {value}" for key, value in glue["overrides"].items())
        details.append(f"GLUE recipe overridden: {changed}")
    if summary.get("convention") == "2025":
        details.append("BabyLM 2025 scoring: no prefix token, first token unscored")
    lines = [f"{model['name']} ({', '.join(details)})"]
    if summary.get("skipped"):
        lines.append(f"skipped, no data given: {', '.join(summary['skipped'])}")
    used = [task["prefix_token"] for task in summary["tasks"].values() if task["prefix_token"]]
    prefixes = sorted({f"{p['token']} ({p['kind']}, id {p['id']})" for p in used})
    if prefixes:
        lines.append(f"empty contexts conditioned on the prefix token {', '.join(prefixes)}")
    if summary["tasks"]:
        lines.append(markdown_table(summary))
    swept = {
        name: t["temperature_sweep"]
        for name, t in summary["tasks"].items()
        if t.get("temperature_sweep")
    }
    if swept:
        lines.append(
            "temperature sweep (reported apart from the T = 1 scores above): "
            + "; ".join(
                f"{name} best at T = {sweep['best_temperature']:g} "
                f"({100 * sweep['best_score']:.2f})"
                for name, sweep in swept.items()
            )
        )
    if glue:
        if glue.get("recipe_name") == "babylm-2025":
            lines.append(
                f"GLUE: the BabyLM 2025 recipe (full fine-tuning), padding {glue['padding_side']}, "
                f"pooling {glue['pooling']} ({glue['padding_note']})"
            )
        lines.append(glue_markdown_table(glue))
    return "\n".join(lines)
