"""`tinyminds compare`: several models' results side by side, with significance tests (SPEC §4).

Reads the ``NAME.json`` files that `tinyminds evaluate` writes. For every pair of models (or every
model against the first) and every task both were scored on, the subtask scores are paired by
subtask name (a subtask scored for only one model is dropped, and listed) and two tests run on
the paired scores, both from scipy with its defaults:

- the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``: two-sided, zero differences dropped as
  in Wilcoxon's original method, exact distribution for small n without zeros): the statistic is
  the smaller of the two signed-rank sums;
- the Wilcoxon rank-sum test (``scipy.stats.ranksums``, which the paper also reports): the two
  models' subtask scores as two unpaired samples; the statistic is a z score.

n is the number of subtasks in both. Writes ``comparison.md`` (the models side by side, the paper's
published numbers where a model matches one, per-task counts, the tests), ``comparison.json``
(the same numbers) and ``comparison.png`` (`tinyminds.evaluation.plots`).

Tasks are read generically: a task entry's score is its first number among ``accuracy``,
``score``, ``macro_average``, ``macro`` and ``mean`` (else the mean of its subtasks), and each of
its ``subtasks`` is a number or a mapping with one of those keys. A subtask without a number (a
GLUE task reported missing) is listed as unscored and takes no part in the tests. Scores are shown
in percent: BLiMP, the supplement and EWoK are stored as fractions; a task whose stored numbers all
lie in [-1, 1] is taken to be stored as fractions too, any other as percent already.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from tinyminds import __version__
from tinyminds.errors import UserError
from tinyminds.evaluation.published import (
    BASELINES_2025,
    BASELINES_2025_SOURCE,
    PublishedScores,
    match_published,
)
from tinyminds.evaluation.tasks import TASKS
from tinyminds.files import to_json

TASK_ORDER = ("blimp", "supplement", "ewok", "glue")
TASK_LABELS = {**{name: fmt.label for name, fmt in TASKS.items()}, "glue": "GLUE"}
SCORE_KEYS = ("accuracy", "score", "macro_average", "macro", "mean")


@dataclass
class TaskScores:
    """One task of one model, in percent."""

    score: float | None
    subtasks: dict[str, float]
    sizes: dict[str, int]
    """Subtask -> number of pairs (or examples), where the file says."""
    hashes: dict[str, str]
    """Subtask -> SHA-256 of its data file, where the file says."""
    unscored: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int | None:
        return sum(self.sizes.values()) if self.sizes else None


@dataclass
class ModelResults:
    """One results file, read."""

    label: str
    """The model's name, made unique among the compared models."""
    name: str
    recipe: str | None
    parameters: int | None
    file: Path
    max_items: int | None
    complete: bool
    tasks: dict[str, TaskScores]
    published: list[PublishedScores]
    convention: str = "2024"
    """How its minimal pairs were scored (`scoring.CONVENTIONS`; files written before the option
    existed were scored the 2024 way)."""


@dataclass
class PairedTests:
    """The two tests on the paired subtask scores of two models for one task."""

    n: int
    """Subtasks scored for both models."""
    nonzero: int
    """Subtasks whose two scores differ: the n the signed-rank test uses after dropping zeros."""
    a_higher: int
    """Subtasks where ``a`` scored higher than ``b`` (``nonzero - a_higher``: lower)."""
    mean_difference: float | None
    """Mean of (a - b) over the paired subtasks, in the scores' unit."""
    wilcoxon_statistic: float | None
    wilcoxon_p: float | None
    ranksum_statistic: float | None
    ranksum_p: float | None
    only_in_a: list[str]
    only_in_b: list[str]
    notes: list[str]


@dataclass
class Comparison:
    """The tests of one task for one pair of models (``a`` and ``b`` are model labels)."""

    task: str
    a: str
    b: str
    tests: PairedTests


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _score_of(entry: Any) -> float | None:
    if (number := _number(entry)) is not None:
        return number
    if isinstance(entry, dict):
        for key in SCORE_KEYS:
            if (number := _number(entry.get(key))) is not None:
                return number
    return None


def _read_task(file: Path, task: str, entry: Any) -> TaskScores:
    if not isinstance(entry, dict):
        raise UserError(f"{file}: task {task!r} is not a JSON object")
    raw_subtasks = entry.get("subtasks", {})
    if not isinstance(raw_subtasks, dict):
        raise UserError(f"{file}: the subtasks of task {task!r} are not a JSON object")
    subtasks, sizes, hashes, unscored = {}, {}, {}, []
    for name, value in raw_subtasks.items():
        score = _score_of(value)
        if score is None:
            unscored.append(name)
            continue
        subtasks[name] = score
        if isinstance(value, dict):
            if isinstance(value.get("n"), int):
                sizes[name] = value["n"]
            if isinstance(value.get("sha256"), str):
                hashes[name] = value["sha256"]
    score = _score_of(entry)
    if score is None and subtasks:
        score = sum(subtasks.values()) / len(subtasks)
    numbers = [*subtasks.values(), *([score] if score is not None else [])]
    if task in TASKS or all(-1.0 <= number <= 1.0 for number in numbers):
        subtasks = {name: 100 * value for name, value in subtasks.items()}
        score = None if score is None else 100 * score
    return TaskScores(score, subtasks, sizes, hashes, unscored)


def load_results(file: Path) -> ModelResults:
    """Read one ``NAME.json`` of `tinyminds evaluate`; a one-line error naming the file if it is
    unreadable, not JSON, or not a results file."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{file}: no such results file") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8"
        raise UserError(f"{file}: cannot read the results file ({reason})") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        hint = " (pass NAME.json, not NAME.pairs.jsonl)" if file.name.endswith(".jsonl") else ""
        raise UserError(
            f"{file}: not a JSON document (line {getattr(error, 'lineno', '?')}){hint}"
        ) from None
    expected = "write one with tinyminds evaluate"
    if not isinstance(document, dict) or not isinstance(document.get("tasks"), dict):
        raise UserError(f"{file} is not a tinyminds results file (no tasks; {expected})")
    model = document.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise UserError(f"{file} is not a tinyminds results file (no model name; {expected})")
    if not document["tasks"]:
        raise UserError(f"{file} holds no finished task")
    name, recipe = model["name"], model.get("recipe")
    recipe = recipe if isinstance(recipe, str) else None
    parameters = model.get("parameters")
    max_items = document.get("max_items")
    convention = str(document.get("convention", "2024"))
    return ModelResults(
        label=name,
        name=name,
        recipe=recipe,
        parameters=parameters if isinstance(parameters, int) else None,
        file=file,
        max_items=max_items if isinstance(max_items, int) else None,
        complete=bool(document.get("complete", True)),
        tasks={task: _read_task(file, task, entry) for task, entry in document["tasks"].items()},
        # The paper's numbers were scored the 2024 way; 2025 results stand beside the 2025
        # pipeline's baselines instead.
        published=match_published(name, recipe) if convention == "2024" else list(BASELINES_2025),
        convention=convention,
    )


def _unique_labels(models: list[ModelResults]) -> None:
    """Give models that share a name distinct labels: the results folder's name, else a number."""
    names = [model.name for model in models]
    for model in models:
        if names.count(model.name) > 1:
            same = [m for m in models if m.name == model.name]
            folders = [m.file.resolve().parent.name for m in same]
            if len(set(folders)) == len(folders):
                model.label = f"{model.name} ({model.file.resolve().parent.name})"
            else:
                model.label = f"{model.name} #{same.index(model) + 1}"


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def paired_tests(
    a: dict[str, float],
    b: dict[str, float],
    sizes: tuple[dict[str, int], dict[str, int]] = ({}, {}),
    hashes: tuple[dict[str, str], dict[str, str]] = ({}, {}),
) -> PairedTests:
    """Wilcoxon signed-rank and rank-sum tests on the scores of the subtasks in both ``a`` and
    ``b`` (subtask -> score); ``sizes`` and ``hashes`` only add notes where the pairs differ."""
    from scipy import stats

    names = sorted(set(a) & set(b))
    x, y = [a[name] for name in names], [b[name] for name in names]
    nonzero = sum(u != v for u, v in zip(x, y, strict=True))
    notes = []
    w_stat = w_p = r_stat = r_p = None
    if len(names) < 2:
        notes.append(f"{len(names)} subtask in both: too few for a test")
    else:
        with warnings.catch_warnings():  # small n, ties: scipy warns and still answers
            warnings.simplefilter("ignore")
            if nonzero:
                result = stats.wilcoxon(x, y)
                w_stat, w_p = _finite(result.statistic), _finite(result.pvalue)
            else:
                notes.append("every paired score is equal: no signed-rank test")
            result = stats.ranksums(x, y)
            r_stat, r_p = _finite(result.statistic), _finite(result.pvalue)
    for what, values, reason in (
        ("pair counts", sizes, "different --max-items?"),
        ("data files (SHA-256)", hashes, "different data"),
    ):
        differ = [
            n for n in names if n in values[0] and n in values[1] and values[0][n] != values[1][n]
        ]
        if differ:
            notes.append(f"{len(differ)} paired subtasks have different {what} ({reason})")
    return PairedTests(
        n=len(names),
        nonzero=nonzero,
        a_higher=sum(u > v for u, v in zip(x, y, strict=True)),
        mean_difference=sum(u - v for u, v in zip(x, y, strict=True)) / len(names)
        if names
        else None,
        wilcoxon_statistic=w_stat,
        wilcoxon_p=w_p,
        ranksum_statistic=r_stat,
        ranksum_p=r_p,
        only_in_a=sorted(set(a) - set(b)),
        only_in_b=sorted(set(b) - set(a)),
        notes=notes,
    )


def ordered_tasks(models: list[ModelResults]) -> list[str]:
    """Every task any model has: BLiMP, supplement, EWoK, GLUE first, then others by name."""
    present = {task for model in models for task in model.tasks}
    known = [task for task in TASK_ORDER if task in present]
    return known + sorted(present - set(known))


def compare_models(models: list[ModelResults], against_first: bool = False) -> list[Comparison]:
    """The tests for every pair of models (or each model against the first), task by task."""
    pairs = (
        [(models[0], other) for other in models[1:]]
        if against_first
        else list(combinations(models, 2))
    )
    comparisons = []
    for task in ordered_tasks(models):
        for a, b in pairs:
            if task in a.tasks and task in b.tasks:
                ta, tb = a.tasks[task], b.tasks[task]
                tests = paired_tests(
                    ta.subtasks, tb.subtasks, (ta.sizes, tb.sizes), (ta.hashes, tb.hashes)
                )
                comparisons.append(Comparison(task, a.label, b.label, tests))
    return comparisons


def published_columns(models: list[ModelResults]) -> list[PublishedScores]:
    """The published references matched by any model, once each, in the models' order."""
    columns: list[PublishedScores] = []
    for model in models:
        columns += [entry for entry in model.published if entry not in columns]
    return columns


# --- the Markdown table ---------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _stat(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(models: list[ModelResults], comparisons: list[Comparison]) -> str:
    """``comparison.md``: the models, their task scores beside the published ones, counts, tests."""
    tasks = ordered_tasks(models)
    columns = published_columns(models)
    lines = [f"# {len(models)} models compared", ""]
    lines += [
        _row(["model", "recipe", "parameters", "results file", "pairs per subtask", "paper match"]),
        _row(["---", "---", "---:", "---", "---", "---"]),
    ]
    for model in models:
        matches = ", ".join(entry.column for entry in model.published) or "–"
        capped = f"at most {model.max_items} (quick look)" if model.max_items else "all"
        if not model.complete:
            capped += ", unfinished run"
        parameters = f"{model.parameters:,}" if model.parameters is not None else "–"
        lines.append(
            _row([model.label, model.recipe or "–", parameters, str(model.file), capped, matches])
        )

    lines += ["", "## Task scores (%)", ""]
    lines.append(_row(["task", *[m.label for m in models], *[c.column for c in columns]]))
    lines.append(_row(["---", *["---:"] * (len(models) + len(columns))]))
    for task in tasks:
        cells = [_pct(m.tasks[task].score) if task in m.tasks else "–" for m in models]
        cells += [_pct(c.scores.get(task)) for c in columns]
        lines.append(_row([TASK_LABELS.get(task, task), *cells]))
    if columns and all(m.convention == "2025" for m in models):
        lines.append("")
        lines.append(
            f"2025 baselines: {BASELINES_2025_SOURCE}. They are full-suite numbers: beside a fast "
            "set (a subset of the same task) they are a guide, not a like-for-like comparison. "
            "Reading is the eye-tracking score, WUG Spearman's rho, both x 100."
        )
    elif columns:
        lines.append("")
        lines.append(
            "Published columns: the model whose recipe or name matches the paper's (case and "
            "punctuation ignored; `tinyminds.evaluation.published`). Sources: "
            + "; ".join(f"{c.column}: {c.source}" for c in columns)
            + ". The paper's models were trained on the full BabyLM 10M corpus."
        )
    if any(m.max_items for m in models):
        lines.append("")
        lines.append(
            "A capped run (at most N pairs per subtask) is a quick look: its scores are not "
            "comparable with published ones. Run `tinyminds evaluate` without --max-items for "
            "the full evaluation."
        )

    lines += ["", "## Counts", ""]
    lines.append(_row(["task", *[m.label for m in models]]))
    lines.append(_row(["---", *["---:"] * len(models)]))
    for task in tasks:
        cells = []
        for model in models:
            scores = model.tasks.get(task)
            if scores is None:
                cells.append("–")
                continue
            cell = f"{len(scores.subtasks)} subtasks"
            if scores.pairs is not None:
                cell += f", {scores.pairs:,} items"
            if scores.unscored:
                cell += f", {len(scores.unscored)} unscored ({', '.join(scores.unscored)})"
            cells.append(cell)
        lines.append(_row([TASK_LABELS.get(task, task), *cells]))

    lines += ["", "## Tests over paired subtask scores", ""]
    lines.append(
        "n: subtasks scored for both models (a subtask of only one is dropped). Signed-rank: "
        "`scipy.stats.wilcoxon` (two-sided; W is the smaller signed-rank sum; equal pairs are "
        "dropped, n≠0 counts the rest). Rank-sum: `scipy.stats.ranksums` (z). Mean difference "
        "in percentage points, first model minus second."
    )
    lines.append("")
    lines.append(
        _row(["task", "models", "n", "n≠0", "mean diff", "signed-rank W", "p", "rank-sum z", "p"])
    )
    lines.append(_row(["---", "---", *["---:"] * 7]))
    notes = []
    for c in comparisons:
        t = c.tests
        diff = "–" if t.mean_difference is None else f"{t.mean_difference:+.2f}"
        label = TASK_LABELS.get(c.task, c.task)
        lines.append(
            _row(
                [
                    label,
                    f"{c.a} vs {c.b}",
                    str(t.n),
                    str(t.nonzero),
                    diff,
                    _stat(t.wilcoxon_statistic),
                    _p(t.wilcoxon_p),
                    _stat(t.ranksum_statistic),
                    _p(t.ranksum_p),
                ]
            )
        )
        dropped = [
            f"{len(names)} only in {who} ({', '.join(names)})"
            for who, names in ((c.a, t.only_in_a), (c.b, t.only_in_b))
            if names
        ]
        if dropped:
            notes.append(f"{label}, {c.a} vs {c.b}: subtasks dropped: {'; '.join(dropped)}")
        notes += [f"{label}, {c.a} vs {c.b}: {note}" for note in t.notes]
    for task in tasks:
        without = [m.label for m in models if task not in m.tasks]
        if without:
            notes.append(
                f"{TASK_LABELS.get(task, task)}: no test with {', '.join(without)} (not scored)"
            )
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def statistics_json(models: list[ModelResults], comparisons: list[Comparison]) -> dict[str, Any]:
    """``comparison.json``: the models' task scores (percent), the published matches, the tests."""
    return {
        "tinyminds_version": __version__,
        "unit": "percent",
        "tests": {
            "signed_rank": "scipy.stats.wilcoxon(a, b): two-sided, zero_method='wilcox'",
            "rank_sum": "scipy.stats.ranksums(a, b)",
            "paired_by": "subtask name; n counts the subtasks scored for both models",
        },
        "models": [
            {
                "label": m.label,
                "name": m.name,
                "recipe": m.recipe,
                "parameters": m.parameters,
                "results_file": str(m.file),
                "max_items": m.max_items,
                "complete": m.complete,
                "tasks": {
                    task: {
                        "score": scores.score,
                        "subtask_count": len(scores.subtasks),
                        "items": scores.pairs,
                        "unscored": scores.unscored,
                    }
                    for task, scores in m.tasks.items()
                },
                "published": [
                    {"column": p.column, "source": p.source, "scores": p.scores, "glue": p.glue}
                    for p in m.published
                ],
            }
            for m in models
        ],
        "comparisons": [
            {"task": c.task, "a": c.a, "b": c.b, **asdict(c.tests)} for c in comparisons
        ],
    }


@dataclass
class ComparisonFiles:
    """What `compare` wrote, and the texts it wrote."""

    markdown: str
    json_document: dict[str, Any]
    markdown_path: Path
    json_path: Path
    png_path: Path


def compare(files: list[Path], out_dir: Path, against_first: bool = False) -> ComparisonFiles:
    """Read the results ``files``, test every pair, write the table, the JSON and the chart."""
    if len(files) < 2:
        raise UserError(f"compare needs at least 2 results files, got {len(files)}")
    models = [load_results(file) for file in files]
    conventions = {model.convention: model.file for model in models}
    if len(conventions) > 1:
        (a, file_a), (b, file_b) = list(conventions.items())[:2]
        raise UserError(
            f"{file_a} was scored with the {a} convention and {file_b} with the {b} one; "
            "compare results of one convention (tinyminds evaluate --convention)"
        )
    _unique_labels(models)
    comparisons = compare_models(models, against_first)
    text = markdown(models, comparisons)
    from tinyminds.evaluation.plots import task_score_chart

    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path, png_path = (out_dir / f"comparison.{ext}" for ext in ("md", "json", "png"))
    md_path.write_text(text, encoding="utf-8")
    document = statistics_json(models, comparisons)
    json_path.write_text(to_json(document) + "\n", encoding="utf-8")
    bars = [(m.label, {t: s.score for t, s in m.tasks.items()}) for m in models]
    bars += [(p.column, dict(p.scores)) for p in published_columns(models)]
    task_score_chart(bars, ordered_tasks(models), png_path, published_from=len(models))
    return ComparisonFiles(text, document, md_path, json_path, png_path)
