"""The BabyLM 2025 zero-shot tasks that are not minimal pairs (SPEC-2025 §2), scored as its
pipeline scores a causal LM, through the batched scorer of `scoring`.

* **entity_tracking** (and ``entity_tracking_fast``): five candidates ``input_prefix + option``,
  the option (by character offsets) scored under the 2025 ranking rule; the first option is the
  correct one and an exact tie with it counts as correct. One accuracy per ``{file}_{numops}_ops``;
  the headline is the mean over the files of each file's mean over numops.
* **wug_adj**: each item's two whole sentences (the -ity form, then the -ness form) scored as BLiMP
  sentences are; q = 1 / (1 + exp(S_ness - S_ity)); the score is Spearman's rho of q against the
  human ``ratio`` (`scipy.stats.spearmanr`, ties at their average rank).
* **reading**: the surprisal of every word of `reading_data.csv` given its sentence so far, with
  the pipeline's word-probability rule (the word glued to the context, its later tokens predicted
  after re-tokenising the context), then ordinary least squares: the eye-tracking score is the
  mean over the four reading-time measures of (R^2_full - R^2_base) / (1 - R^2_base), the
  self-paced reading score the same for self-paced reading times with the previous word's length
  and surprisal (spill-over) in the baseline.

Entity tracking's items are licensed like EWoK's: errors name the file, line and field, never the
text, and the per-item records hold scores only.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from tinyminds.errors import UserError
from tinyminds.evaluation.scoring import (
    Request,
    completion_requests,
    score_requests,
    score_requests_at,
    sweep_record,
)
from tinyminds.evaluation.tasks import task_files

READING_TIMES = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
"""The eye-tracking measures (the pipeline takes every column with "RT" in its name)."""
SELF_PACED = "self_paced_reading_time"
READING_COLUMNS = (
    "item",
    "word",
    "context_length",
    "Subtlex_log10",
    "length",
    *READING_TIMES,
    SELF_PACED,
    "prev_word",
    "prev_item",
    "prev_length",
)
PANDAS_MISSING = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
"""The strings `pandas.read_csv` reads as missing by default: the pipeline reads the CSV with
pandas, so a previous item "None" is missing there (and an ``item`` "None" is restored)."""


# --- results -------------------------------------------------------------------------------------


@dataclass
class ScoredTask:
    """A 2025 task's result, written into ``NAME.json`` beside the minimal-pair tasks."""

    task: str
    metric: str
    """``accuracy``, ``spearman_rho`` or ``r2_improvement`` (a fraction; x 100 in tables)."""
    score: float
    n: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Per-item records (scores, no text), appended to ``NAME.pairs.jsonl``."""
    ties: int = 0

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"metric": self.metric, "score": self.score, "n": self.n}
        if self.metric == "accuracy":
            entry["accuracy"] = self.score
        entry.update(self.details)
        entry["ties"] = self.ties
        entry["prefix_token"] = None
        entry["seconds"] = round(self.seconds, 3)
        return entry


# --- reading the data ----------------------------------------------------------------------------


def _jsonl(path: Path, needed: dict[str, type | tuple[type, ...]]) -> tuple[list[dict], str]:
    """The records of a JSONL file with ``needed`` fields of the given types, and its SHA-256."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    records = []
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{where}: not UTF-8 text") from None
        except json.JSONDecodeError as error:  # the message only: the text may be licensed
            raise UserError(
                f"{where}: malformed JSON ({error.msg}, column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got a {type(record).__name__}")
        for name, kind in needed.items():
            if name not in record:
                raise UserError(f"{where}: missing field {name!r} (lines need {', '.join(needed)})")
            if not isinstance(record[name], kind) or isinstance(record[name], bool):
                raise UserError(f"{where}: field {name!r} has the wrong type")
        records.append(record)
    if not records:
        raise UserError(f"{path}: no items (an empty file)")
    return records, hashlib.sha256(data).hexdigest()


@dataclass
class EntityTrackingFile:
    split: str
    path: Path
    sha256: str
    numops: list[int]
    candidates: list[list[tuple[str, str]]]
    """Per item: (sentence, completion) per option, the correct option first."""


def read_entity_tracking(task: str, paths: list[Path], only_task: bool) -> list[EntityTrackingFile]:
    files = []
    for path in task_files(task, paths, only_task):
        records, sha = _jsonl(path, {"input_prefix": str, "options": list, "numops": int})
        candidates = []
        for number, record in enumerate(records, start=1):
            options = record["options"]
            if len(options) < 2 or not all(isinstance(o, str) for o in options):
                raise UserError(f"{path}: item {number}: 'options' must be at least two texts")
            candidates.append([(record["input_prefix"] + o, o) for o in options])
        files.append(
            EntityTrackingFile(path.stem, path, sha, [r["numops"] for r in records], candidates)
        )
    return files


@dataclass
class WugItems:
    path: Path
    sha256: str
    sentences: list[tuple[str, str]]
    """(the -ity sentence, the -ness sentence) per item."""
    ratios: list[float]


def read_wug(task: str, paths: list[Path], only_task: bool) -> WugItems:
    sentences: list[tuple[str, str]] = []
    ratios: list[float] = []
    files = task_files(task, paths, only_task)
    for path in files:
        records, sha = _jsonl(path, {"sentences": str, "ratio": (int, float)})
        for number, record in enumerate(records, start=1):
            parts = record["sentences"].split("\t")
            if len(parts) != 2:
                raise UserError(
                    f"{path}: item {number}: 'sentences' must be two sentences separated by a tab"
                )
            sentences.append((parts[0], parts[1]))
            ratios.append(float(record["ratio"]))
    return WugItems(files[0], sha, sentences, ratios)


@dataclass
class ReadingTable:
    path: Path
    sha256: str
    rows: list[dict[str, Any]]
    """Per word: ``item``, ``word``, ``prev_item``, ``prev_word`` (text or None when missing) and
    the numeric columns (float, NaN when missing)."""


def read_reading(task: str, paths: list[Path], only_task: bool) -> ReadingTable:
    files = task_files(task, paths, only_task)
    if len(files) != 1:
        raise UserError(f"reading: expected one .csv file, found {len(files)} ({files[0].parent})")
    path = files[0]
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in READING_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r} (the reading task needs it)")
    rows = []
    for number, raw in enumerate(reader, start=2):
        row: dict[str, Any] = {}
        for column in READING_COLUMNS:
            value = raw[column]
            if column in ("item", "word", "prev_item", "prev_word"):
                row[column] = None if value in PANDAS_MISSING else value
                continue
            try:
                row[column] = math.nan if value in PANDAS_MISSING else float(value)
            except ValueError:
                raise UserError(f"{path}:{number}: column {column!r} is not a number") from None
        if row["item"] is None:  # the pipeline's fillna("None"): the sentence "None of ..."
            row["item"] = "None"
        if row["word"] is None:
            raise UserError(f"{path}:{number}: no word")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows")
    return ReadingTable(path, hashlib.sha256(data).hexdigest(), rows)


# --- scoring -------------------------------------------------------------------------------------


def _first_max_is_correct(scores: list[float]) -> tuple[bool, bool]:
    """(correct, tie): the pipeline's ``torch.max`` takes the first maximum and the label is 0."""
    best_other = max(scores[1:])
    return scores[0] >= best_other, scores[0] == best_other


def score_entity_tracking(
    task: str,
    files: list[EntityTrackingFile],
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_items: int | None,
    temperatures: tuple[float, ...] = (),
) -> ScoredTask:
    started = time.perf_counter()
    items = [(f, i) for f in files for i in range(len(f.candidates[:max_items]))]
    flat = [c for f, i in items for c in f.candidates[i]]
    per_temperature = score_requests_at(
        model, completion_requests(tokenizer, flat), (1.0, *temperatures), batch_size, task
    )
    scores = per_temperature[0]
    records: list[dict[str, Any]] = []
    counts: dict[tuple[str, int], list[int]] = {}
    position, ties = 0, 0
    for f, i in items:
        k = len(f.candidates[i])
        item_scores = scores[position : position + k]
        position += k
        correct, tie = _first_max_is_correct(item_scores)
        ties += tie
        uid = f"{f.split}_{f.numops[i]}_ops"
        tally = counts.setdefault((f.split, f.numops[i]), [0, 0, 0])
        tally[0] += correct
        tally[1] += 1
        tally[2] += tie
        records.append(
            {
                "task": task,
                "subtask": uid,
                "index": i,
                "scores": item_scores,
                "correct": correct,
                "tie": tie,
            }
        )
    subtasks, per_split = {}, {}
    by_file = {f.split: f for f in files}
    for (split, numops), (correct, n, tie_count) in sorted(counts.items()):
        subtasks[f"{split}_{numops}_ops"] = {
            "accuracy": correct / n,
            "n": n,
            "correct": correct,
            "ties": tie_count,
            "file": str(by_file[split].path.resolve()),
            "sha256": by_file[split].sha256,
        }
        per_split.setdefault(split, []).append(correct / n)
    split_means = {split: sum(v) / len(v) for split, v in per_split.items()}
    headline = sum(split_means.values()) / len(split_means)
    details: dict[str, Any] = {}
    if temperatures:
        swept = [_entity_headline(items, row) for row in per_temperature[1:]]
        details["temperature_sweep"] = sweep_record(temperatures, swept)
    return ScoredTask(
        task,
        "accuracy",
        headline,
        len(items),
        time.perf_counter() - started,
        {
            **details,
            "aggregation": "mean over files of each file's mean over numops (SPEC-2025 §2)",
            "split_means": split_means,
            "subtask_count": len(subtasks),
            "subtasks": subtasks,
        },
        records,
        ties,
    )


def _entity_headline(items: list[tuple[EntityTrackingFile, int]], scores: list[float]) -> float:
    """Entity tracking's headline from one temperature's candidate scores."""
    counts: dict[tuple[str, int], list[int]] = {}
    position = 0
    for f, i in items:
        k = len(f.candidates[i])
        correct, _ = _first_max_is_correct(scores[position : position + k])
        position += k
        tally = counts.setdefault((f.split, f.numops[i]), [0, 0])
        tally[0] += correct
        tally[1] += 1
    per_split: dict[str, list[float]] = {}
    for (split, _), (correct, n) in counts.items():
        per_split.setdefault(split, []).append(correct / n)
    means = [sum(v) / len(v) for v in per_split.values()]
    return sum(means) / len(means)


def score_wug(
    task: str,
    items: WugItems,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_items: int | None,
    temperatures: tuple[float, ...] = (),
) -> ScoredTask:
    started = time.perf_counter()
    sentences = items.sentences[:max_items]
    ratios = items.ratios[: len(sentences)]
    flat = [(s, s) for pair in sentences for s in pair]  # whole-sentence completions
    per_temperature = score_requests_at(
        model, completion_requests(tokenizer, flat), (1.0, *temperatures), batch_size, task
    )
    scores = per_temperature[0]
    ity, ness = scores[0::2], scores[1::2]
    q = _ity_probabilities(scores)
    rho = _spearman(q, ratios)
    details: dict[str, Any] = {}
    if temperatures:
        swept = [_spearman(_ity_probabilities(row), ratios) for row in per_temperature[1:]]
        details["temperature_sweep"] = sweep_record(temperatures, swept)
    records = [
        {"task": task, "index": i, "ity": a, "ness": b, "q": p}
        for i, (a, b, p) in enumerate(zip(ity, ness, q, strict=True))
    ]
    return ScoredTask(
        task,
        "spearman_rho",
        rho,
        len(q),
        time.perf_counter() - started,
        {**details, "file": str(items.path.resolve()), "sha256": items.sha256},
        records,
    )


def _ity_probabilities(scores: list[float]) -> list[float]:
    """q = softmax([S_ity, S_ness])_0 per item, from the interleaved scores."""
    ity, ness = scores[0::2], scores[1::2]
    return [1.0 / (1.0 + math.exp(min(b - a, 700.0))) for a, b in zip(ity, ness, strict=True)]


def _spearman(q: list[float], ratios: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(q, ratios).statistic) if len(q) > 1 else math.nan


def word_requests(tokenizer: PreTrainedTokenizerBase, context: str, word: str) -> list[Request]:
    """The requests whose scores sum to log p(word | context) under the pipeline's rule
    (SPEC-2025 §2, reading): the context with the tokenizer's default special tokens, the word's
    tokens with none and no space inserted; from the second token on, the context string grows by
    the previous token's text and is tokenised again, and the target is the first id of the
    current token's text tokenised again."""
    # verbose=False: a context past the model's positions keeps its last tokens when scored
    context_ids = list(tokenizer(context, verbose=False)["input_ids"])
    targets = list(tokenizer(word, add_special_tokens=False)["input_ids"])
    if not targets:
        return []
    requests: list[Request] = [(context_ids, [targets[0]])]
    text = context
    for previous, current in itertools.pairwise(targets):
        text += tokenizer.decode([previous])
        target = tokenizer(tokenizer.decode([current]))["input_ids"][0]
        requests.append((list(tokenizer(text, verbose=False)["input_ids"]), [target]))
    return requests


def surprisals(
    tokenizer: PreTrainedTokenizerBase,
    model: nn.Module,
    pairs: list[tuple[str, str]],
    batch_size: int,
) -> list[float]:
    """-ln p(word | context) for each (context, word), natural log, batched."""
    owners: list[int] = []
    requests: list[Request] = []
    for index, (context, word) in enumerate(pairs):
        found = word_requests(tokenizer, context, word)
        requests += found
        owners += [index] * len(found)
    scores = score_requests(model, requests, batch_size, description="reading")
    totals = [0.0] * len(pairs)
    for owner, score in zip(owners, scores, strict=True):
        totals[owner] -= score
    return totals


def r2(design: np.ndarray, target: np.ndarray) -> float:
    """Plain R^2 of the least-squares fit of ``target`` on ``design`` (which holds the intercept)."""
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coefficients
    total = target - target.mean()
    return 1.0 - float(residual @ residual) / float(total @ total)


def r2_improvement(baseline: list[np.ndarray], predictor: np.ndarray, target: np.ndarray) -> float:
    """(R^2_full - R^2_base) / (1 - R^2_base): the share of what the baseline leaves unexplained that
    ``predictor`` explains (OLS with an intercept; full = baseline + predictor)."""
    ones = np.ones_like(target)
    base = np.column_stack([ones, *baseline])
    full = np.column_stack([base, predictor])
    r2_base = r2(base, target)
    return (r2(full, target) - r2_base) / (1.0 - r2_base)


def _with_products(columns: list[np.ndarray]) -> list[np.ndarray]:
    """The columns and every pairwise product of them (a formula's ``(a + b + c)^2``)."""
    return [*columns, *(a * b for a, b in itertools.combinations(columns, 2))]


def reading_scores(rows: list[dict[str, Any]], pred: list[float], prev_pred: list[float]) -> dict:
    """The eye-tracking and self-paced reading scores from the table and the surprisals."""
    column = {
        name: np.array([row[name] for row in rows], dtype=np.float64)
        for name in READING_COLUMNS
        if name not in ("item", "word", "prev_item", "prev_word")
    }
    surprisal = np.array(pred, dtype=np.float64)
    previous = np.array(prev_pred, dtype=np.float64)
    frequency, length, context = column["Subtlex_log10"], column["length"], column["context_length"]
    eye, eye_rows = {}, {}
    for measure in READING_TIMES:
        keep = np.isfinite(
            np.column_stack([column[measure], frequency, length, context, surprisal])
        )
        keep = keep.all(axis=1)  # the rows the pipeline's regression keeps (no NA in its columns)
        base = _with_products([frequency[keep], length[keep], context[keep]])
        eye[measure] = r2_improvement(base, surprisal[keep], column[measure][keep])
        eye_rows[measure] = int(keep.sum())
    spill = [frequency, length, context, column["prev_length"], previous]
    keep = np.isfinite(np.column_stack([column[SELF_PACED], *spill, surprisal])).all(axis=1)
    spr = r2_improvement(
        _with_products([c[keep] for c in spill]), surprisal[keep], column[SELF_PACED][keep]
    )
    return {
        "eye_tracking": sum(eye.values()) / len(eye),
        "eye_tracking_measures": eye,
        "eye_tracking_rows": eye_rows,
        "self_paced_reading": spr,
        "self_paced_reading_rows": int(keep.sum()),
    }


def score_reading(
    task: str,
    table: ReadingTable,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
) -> ScoredTask:
    started = time.perf_counter()
    rows = table.rows
    pred = surprisals(tokenizer, model, [(r["item"], r["word"]) for r in rows], batch_size)
    has_previous = [r["prev_item"] is not None and r["prev_word"] is not None for r in rows]
    previous = surprisals(
        tokenizer,
        model,
        [(r["prev_item"], r["prev_word"]) for r, ok in zip(rows, has_previous, strict=True) if ok],
        batch_size,
    )
    it = iter(previous)
    prev_pred = [next(it) if ok else math.nan for ok in has_previous]
    scores = reading_scores(rows, pred, prev_pred)
    records = [
        {"task": task, "index": i, "surprisal": p, "previous_surprisal": q}
        for i, (p, q) in enumerate(zip(pred, prev_pred, strict=True))
    ]
    return ScoredTask(
        task,
        "r2_improvement",
        scores["eye_tracking"],
        len(rows),
        time.perf_counter() - started,
        {**scores, "file": str(table.path.resolve()), "sha256": table.sha256},
        records,
    )


def load_2025_task(task: str, paths: list[Path], only_task: bool) -> Any:
    """Read and check one task's data before any model is loaded."""
    if task.startswith("entity_tracking"):
        return read_entity_tracking(task, paths, only_task)
    if task == "wug_adj":
        return read_wug(task, paths, only_task)
    return read_reading(task, paths, only_task)


def score_2025_task(
    task: str,
    data: Any,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_items: int | None,
    temperatures: tuple[float, ...] = (),
) -> ScoredTask:
    """Score one task; ``temperatures``: the 2025 sweep (not for reading, which has none)."""
    if task.startswith("entity_tracking"):
        return score_entity_tracking(
            task, data, model, tokenizer, batch_size, max_items, temperatures
        )
    if task == "wug_adj":
        return score_wug(task, data, model, tokenizer, batch_size, max_items, temperatures)
    return score_reading(task, data, model, tokenizer, batch_size)
