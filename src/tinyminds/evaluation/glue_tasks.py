"""The (Super)GLUE tasks of BabyLM 2024: where their files are, how a line becomes an input, metrics.

The data is the BabyLM 2024 ``glue_filtered/`` folder: ``{task}.train.jsonl`` and
``{task}.valid.jsonl`` for the 11 tasks below (``mnli-mm`` has a valid file only: it is evaluated
with the model fine-tuned on ``mnli``). A task without a training file cannot be fine-tuned; it is
listed as missing in the results with its reason, never dropped.

Inputs are built as the BabyLM fine-tuning scripts build them (the 2024 ``finetune_classification.py``
and the 2025 pipeline's dataset, which agree): each line gives a first text and, for pair tasks, a
second text, and the two are handed to the tokenizer as a text pair (``tokenizer(first, second)``),
so whatever the tokenizer's pair template adds is added; a GPT-2-style tokenizer, which has none,
simply concatenates the two token sequences. MultiRC's first text is ``"Question: {question}
Answer: {answer}"`` with the paragraph second; WSC's is ``'Does "{span2_text}" refer to
"{span1_text}" in this passage?'`` with the text second.

Metrics (SPEC §4): Matthews correlation for CoLA, F1 of the positive class (label 1) for MRPC and
QQP, accuracy otherwise. Each MultiRC line is one answer option, so its accuracy is per answer
option. The majority-class baseline predicts the most frequent training label for every example
and is scored with the task's metric. The macro average covers the 9 tasks the paper averages:
every task but CoLA and MNLI-mismatched (the paper's published per-task scores of DistilledGPT
and BabyLlama average to its macro 68.8 and 68.9 over exactly these nine).

Everything here is pure Python (no torch), so a bad file is reported before any model is loaded.
Errors name the file and line, never the line's text.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tinyminds.errors import UserError

FOLDER = "glue_filtered"
"""The GLUE folder's name in BabyLM's ``evaluation_data/``."""


@dataclass(frozen=True)
class GlueTask:
    """How one task's lines are read and scored."""

    name: str
    first: str
    """Template of the first text, filled with the line's fields (``str.format``)."""
    second: str | None
    """Template of the second text of a pair task; None for single-sentence tasks."""
    fields: tuple[str, ...]
    """Text fields every line must have."""
    num_labels: int
    metric: str
    """``mcc``, ``f1`` or ``accuracy``."""
    label: str
    """The task's name in tables."""
    model_of: str | None = None
    """Evaluated with the model fine-tuned on this task (mnli-mm: mnli) instead of its own."""


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "boolq", "{question}", "{passage}", ("question", "passage"), 2, "accuracy", "BoolQ"
        ),
        GlueTask("cola", "{sentence}", None, ("sentence",), 2, "mcc", "CoLA"),
        GlueTask(
            "mnli", "{premise}", "{hypothesis}", ("premise", "hypothesis"), 3, "accuracy", "MNLI"
        ),
        GlueTask(
            "mnli-mm",
            "{premise}",
            "{hypothesis}",
            ("premise", "hypothesis"),
            3,
            "accuracy",
            "MNLI-mm",
            model_of="mnli",
        ),
        GlueTask("mrpc", "{sentence1}", "{sentence2}", ("sentence1", "sentence2"), 2, "f1", "MRPC"),
        GlueTask(
            "multirc",
            "Question: {question} Answer: {answer}",
            "{paragraph}",
            ("paragraph", "question", "answer"),
            2,
            "accuracy",
            "MultiRC",
        ),
        GlueTask(
            "qnli", "{question}", "{sentence}", ("question", "sentence"), 2, "accuracy", "QNLI"
        ),
        GlueTask("qqp", "{question1}", "{question2}", ("question1", "question2"), 2, "f1", "QQP"),
        GlueTask(
            "rte", "{sentence1}", "{sentence2}", ("sentence1", "sentence2"), 2, "accuracy", "RTE"
        ),
        GlueTask("sst2", "{sentence}", None, ("sentence",), 2, "accuracy", "SST-2"),
        GlueTask(
            "wsc",
            'Does "{span2_text}" refer to "{span1_text}" in this passage?',
            "{text}",
            ("text", "span1_text", "span2_text"),
            2,
            "accuracy",
            "WSC",
        ),
    )
}

MACRO_TASKS = ("boolq", "mnli", "mrpc", "multirc", "qnli", "qqp", "rte", "sst2", "wsc")
"""The paper's macro average: every task but CoLA, and MNLI matched only (see the module doc)."""


@dataclass(frozen=True)
class Example:
    first: str
    second: str | None
    label: int


@dataclass
class GlueFile:
    """One JSONL file of a task, read and checked."""

    path: Path
    sha256: str
    examples: list[Example]

    @property
    def labels(self) -> list[int]:
        return [example.label for example in self.examples]


@dataclass
class GlueData:
    """Every task's files found in one ``glue_filtered/`` folder (None where a file is absent)."""

    folder: Path
    train: dict[str, GlueFile | None]
    valid: dict[str, GlueFile | None]

    def missing(self, task: str) -> str | None:
        """Why ``task`` cannot be scored (no training file, no valid file), or None."""
        spec = GLUE_TASKS[task]
        if spec.model_of:
            reason = self.missing(spec.model_of)
            if reason:
                return f"{reason} for {spec.model_of}, whose model evaluates it"
        elif self.train[task] is None:
            return "no training file"
        if self.valid[task] is None:
            return "no valid file"
        return None


def read_glue_file(task: str, path: Path) -> GlueFile:
    """Read one JSONL file of ``task``; every problem is one line naming the file and line number."""
    spec = GLUE_TASKS[task]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    labels = list(range(spec.num_labels))
    examples: list[Example] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}: not UTF-8 text") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{where}: malformed JSON ({error.msg}, column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got a {type(record).__name__}")
        for name in (*spec.fields, "label"):
            if name not in record:
                needed = ", ".join((*spec.fields, "label"))
                raise UserError(f"{where}: missing field {name!r} ({task} lines need {needed})")
        for name in spec.fields:
            if not isinstance(record[name], str):
                kind = type(record[name]).__name__
                raise UserError(f"{where}: field {name!r} is a {kind}, expected text")
        label = record["label"]
        if isinstance(label, bool) or label not in labels:
            raise UserError(
                f"{where}: unknown label {label!r} ({task} labels are "
                f"{', '.join(map(str, labels))})"
            )
        texts = {name: record[name] for name in spec.fields}
        second = spec.second.format(**texts) if spec.second else None
        examples.append(Example(spec.first.format(**texts), second, label))
    if not examples:
        raise UserError(f"{path}: no examples (an empty file)")
    return GlueFile(path, hashlib.sha256(data).hexdigest(), examples)


def glue_folder(paths: list[Path], only_task: bool) -> Path:
    """The ``glue_filtered/`` folder among ``paths``: a folder holding it, or the folder itself.

    A folder called ``glue_filtered`` or ``glue`` counts; when GLUE is the only task evaluated, any
    folder does.
    """
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if not path.is_dir():
            continue
        if (path / FOLDER).is_dir():
            found.append(path / FOLDER)
        elif path.name in (FOLDER, "glue") or only_task:
            found.append(path)
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no data for task glue in {shown}: expected a folder {FOLDER}/ (as in BabyLM's "
            f"evaluation_data/) holding TASK.train.jsonl and TASK.valid.jsonl files"
        )
    if len({p.resolve() for p in found}) > 1:
        raise UserError(f"GLUE data given twice: {found[0]} and {found[1]}; give one folder")
    return found[0]


def load_glue(paths: list[Path], only_task: bool = False) -> GlueData:
    """Find the GLUE folder among ``paths`` and read and check every file in it, up front."""
    folder = glue_folder(paths, only_task)
    if not any(folder.glob("*.jsonl")):
        raise UserError(f"{folder}: empty task folder (no .jsonl files)")
    files: dict[str, dict[str, GlueFile | None]] = {"train": {}, "valid": {}}
    for task in GLUE_TASKS:
        for split, by_task in files.items():
            path = folder / f"{task}.{split}.jsonl"
            by_task[task] = read_glue_file(task, path) if path.is_file() else None
    return GlueData(folder, files["train"], files["valid"])


def unrecognised_files(folder: Path) -> list[str]:
    """JSONL files in the GLUE folder that are not ``{task}.{train,valid}.jsonl`` of a known task."""
    known = {f"{task}.{split}.jsonl" for task in GLUE_TASKS for split in ("train", "valid")}
    return sorted(path.name for path in folder.glob("*.jsonl") if path.name not in known)


# --- metrics --------------------------------------------------------------------------------------


def accuracy(labels: list[int], predictions: list[int]) -> float:
    pairs = list(zip(labels, predictions, strict=True))
    return sum(label == prediction for label, prediction in pairs) / len(pairs)


def f1(labels: list[int], predictions: list[int], positive: int = 1) -> float:
    """F1 of the ``positive`` class; 0 when there is no true positive (nothing predicted, or all wrong)."""
    pairs = list(zip(labels, predictions, strict=True))
    tp = sum(label == positive and prediction == positive for label, prediction in pairs)
    fp = sum(label != positive and prediction == positive for label, prediction in pairs)
    fn = sum(label == positive and prediction != positive for label, prediction in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(labels: list[int], predictions: list[int]) -> float:
    """Matthews correlation (the multiclass form, equal to the binary one for two classes).

    0 when it is undefined, e.g. for a constant predictor (scikit-learn's convention).
    """
    n = len(labels)
    correct = sum(
        label == prediction for label, prediction in zip(labels, predictions, strict=True)
    )
    true_counts, predicted_counts = Counter(labels), Counter(predictions)
    classes = set(true_counts) | set(predicted_counts)
    covariance = correct * n - sum(true_counts[c] * predicted_counts[c] for c in classes)
    spread_predicted = n * n - sum(count * count for count in predicted_counts.values())
    spread_true = n * n - sum(count * count for count in true_counts.values())
    if spread_predicted == 0 or spread_true == 0:
        return 0.0
    return covariance / math.sqrt(spread_predicted * spread_true)


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc}


def score(task: str, labels: list[int], predictions: list[int]) -> float:
    """The task's metric (SPEC §4) of ``predictions`` against ``labels``, as a fraction."""
    return METRICS[GLUE_TASKS[task].metric](labels, predictions)


def majority_label(labels: list[int]) -> int:
    """The most frequent label (the smallest one on a tie)."""
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def macro_average(scores: dict[str, float]) -> dict[str, object]:
    """The mean over the tasks of `MACRO_TASKS` present in ``scores``, saying which it covers."""
    covered = [task for task in MACRO_TASKS if task in scores]
    return {
        "score": sum(scores[task] for task in covered) / len(covered) if covered else None,
        "tasks": covered,
        "covered": len(covered),
        "of": len(MACRO_TASKS),
        "complete": len(covered) == len(MACRO_TASKS),
    }
