"""`tinyminds evaluate`: zero-shot minimal-pair evaluation of a causal LM folder (SPEC §4), and
GLUE by LoRA fine-tuning (`glue`) when asked for.

Everything that can be checked cheaply is checked before the model is loaded and before the first
task is scored: the model folder and its tokenizer, every data file (JSON, fields, GLUE labels), the
prefix token, GLUE's padding token. Then each zero-shot task is scored in one batched pass over all
its subtasks (better batches than one pass per file) and its results are written as soon as it is
done; GLUE's are written after every fine-tuned task.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from tinyminds import __version__
from tinyminds.console import info
from tinyminds.data.tokenizer import warn_if_not_portable
from tinyminds.errors import UserError
from tinyminds.evaluation.babylm2025 import load_2025_task, score_2025_task
from tinyminds.evaluation.glue_tasks import load_glue, unrecognised_files
from tinyminds.evaluation.results import ResultsWriter, TaskResult, decide, subtask_result
from tinyminds.evaluation.scoring import (
    CONVENTIONS,
    needs_prefix,
    pair_requests,
    pair_requests_2025,
    prefix_token,
    score_requests_at,
    sweep_record,
)
from tinyminds.evaluation.tasks import (
    OTHER_2025_TASKS,
    TASKS,
    Subtask,
    load_tasks,
    tasks_with_data,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class Evaluation:
    """What an evaluation produced: the results document, its table and where the files are."""

    summary: dict[str, Any]
    json_path: Path
    pairs_path: Path
    predictions_path: Path | None = None
    """GLUE's per-example predictions (None without GLUE)."""


def _one_line(error: Exception) -> str:
    """A library's (often multi-line) message as one line: the CLI prints errors as one line."""
    return " ".join(str(error).split())


def check_model_folder(folder: Path) -> None:
    """A one-line error for a folder that is not a Hugging Face model folder with a tokenizer."""
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a Hugging Face model folder (no config.json)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{folder} has no tokenizer (no {' or '.join(TOKENIZER_FILES[:2])}); save the model's "
            f"tokenizer into it with tokenizer.save_pretrained()"
        )


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    warn_if_not_portable(folder)
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}: the tokenizer cannot be loaded ({_one_line(error)})") from None


def load_causal_lm(folder: Path, device: torch.device) -> nn.Module:
    """The model in ``folder`` in float32 on ``device``, refusing masked LMs.

    Float32 whatever dtype the folder was saved in: the official pipeline scores in float32, and
    minimal pairs are decided by small differences.
    """
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}: unreadable config.json ({_one_line(error)})") from None
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UserError(
            f"{folder} is not a causal language model (saved as {', '.join(architectures)})"
        )
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise UserError(
            f"{folder}: cannot load a causal language model ({_one_line(error)})"
        ) from None
    return model.to(device).eval().requires_grad_(False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def model_name(folder: Path) -> str:
    """The run's name for a tinyminds model folder (``runs/gpt2-44m/model`` -> ``gpt2-44m``),
    otherwise the folder's own name."""
    folder = folder.resolve()
    if folder.name == "model" and (folder / "tinyminds.json").is_file():
        return folder.parent.name
    return folder.name


def _model_record(folder: Path, name: str, model: nn.Module) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "path": str(folder.resolve()),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),  # tied weights counted once
    }
    try:  # a tinyminds model folder says which recipe trained it
        saved = json.loads((folder / "tinyminds.json").read_text(encoding="utf-8"))
        record["recipe"] = saved.get("recipe")
        for key in ("step", "words_seen"):  # which checkpoint of its run it is
            if key in saved:
                record[key] = saved[key]
    except (OSError, ValueError, AttributeError):
        pass
    return record


def score_task(
    task: str,
    subtasks: list[Subtask],
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_items: int | None,
    share_prefixes: bool | None = None,
    convention: str = "2024",
    temperatures: tuple[float, ...] = (),
) -> TaskResult:
    """Score every pair of every subtask of ``task`` in one batched pass, then decide and count.

    ``share_prefixes``: see `scoring.score_requests` (None: chosen by device and model size).
    ``convention``: `scoring.CONVENTIONS` (2024: the paper's, lm-eval's; 2025: BabyLM 2025's).
    ``temperatures``: the 2025 sweep, scored in the same passes and reported apart from T = 1."""
    started = time.perf_counter()
    chosen = [s.pairs[:max_items] for s in subtasks]  # [:None] keeps them all
    pairs = [pair for selected in chosen for pair in selected]
    if convention == "2025":
        prefix = None  # the 2025 pipeline adds no prefix token (SPEC-2025 §1)
        requests = pair_requests_2025(tokenizer, pairs)
    else:
        prefix = prefix_token(tokenizer) if needs_prefix(pairs) else None
        requests = pair_requests(tokenizer, pairs, prefix)
    per_temperature = score_requests_at(
        model,
        requests,
        (1.0, *temperatures),
        batch_size,
        description=task,
        share_prefixes=share_prefixes,
    )
    scores = per_temperature[0]
    good, bad = scores[: len(pairs)], scores[len(pairs) :]
    records: list[dict[str, Any]] = []
    results, start = [], 0
    for subtask, selected in zip(subtasks, chosen, strict=True):
        stop = start + len(selected)
        results.append(
            subtask_result(
                task,
                subtask.name,
                str(subtask.path.resolve()),
                subtask.sha256,
                good[start:stop],
                bad[start:stop],
                records,
            )
        )
        start = stop
    prefix_record = (
        None if prefix is None else {"kind": prefix.kind, "token": prefix.token, "id": prefix.id}
    )
    sweep = None
    if temperatures:
        sizes = [len(selected) for selected in chosen]
        accuracies = [_mean_accuracy(row, len(pairs), sizes) for row in per_temperature[1:]]
        sweep = sweep_record(temperatures, accuracies)
    return TaskResult(
        task, results, prefix_record, time.perf_counter() - started, records, sweep=sweep
    )


def _mean_accuracy(scores: list[float], n_pairs: int, sizes: list[int]) -> float:
    """The unweighted mean over subtasks of the accuracy, from every good then every bad score."""
    good, bad = scores[:n_pairs], scores[n_pairs:]
    accuracies, start = [], 0
    for size in sizes:
        correct, _ = decide(good[start : start + size], bad[start : start + size])
        accuracies.append(sum(correct) / size)
        start += size
    return sum(accuracies) / len(accuracies)


@dataclass
class ZeroShotData:
    """The zero-shot task files of an evaluation, read and checked once: a checkpoint sweep
    (`trajectory`) scores every checkpoint on the same ones."""

    tasks: list[str]
    """The tasks to score (those without data already left out when that was asked for)."""
    skipped: list[str]
    """Tasks asked for (a suite or default list) that have no data among the paths given."""
    pairs: dict[str, list[Subtask]]
    """BLiMP, the supplement, EWoK and their fast sets: each task's subtasks of minimal pairs."""
    other_2025: dict[str, Any]
    """Entity tracking, WUG and reading: each task's data (`babylm2025.load_2025_task`)."""


def select_tasks(tasks: list[str], data: list[Path], skip_missing: bool) -> tuple[list, list]:
    """(tasks to score, tasks skipped): with ``skip_missing`` the tasks without data in ``data``
    are named and left out (an error when none is left); without, every task is kept."""
    if not skip_missing:
        return tasks, []
    kept, skipped = tasks_with_data(tasks, data)
    if not kept:
        shown = ", ".join(str(path) for path in data)
        raise UserError(f"no data for any of {', '.join(skipped)} in {shown}")
    if skipped:
        info(f"skipped (no data given): {', '.join(skipped)}")
    return kept, skipped


def load_zero_shot_data(tasks: list[str], data: list[Path], skipped: list[str]) -> ZeroShotData:
    """Read and check every zero-shot file of ``tasks`` (GLUE's are read by `load_glue`)."""
    only_2025 = [task for task in tasks if task in OTHER_2025_TASKS]
    return ZeroShotData(
        tasks,
        skipped,
        load_tasks(tasks, data),
        {task: load_2025_task(task, data, len(tasks) == 1) for task in only_2025},
    )


def evaluate(
    model_dir: Path,
    tasks: list[str],
    data: list[Path],
    out_dir: Path,
    *,
    name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    max_items: int | None = None,
    epochs: int | None = None,
    max_train_examples: int | None = None,
    glue_batch_size: int | None = None,
    convention: str | None = None,
    skip_missing: bool = False,
    temperatures: tuple[float, ...] = (),
    glue_recipe: str = "2024",
    glue_padding: str = "right",
    glue_pooling: str = "first",
    zero_shot: ZeroShotData | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Evaluation:
    """Evaluate the causal LM in ``model_dir`` on ``tasks`` read from ``data``; write the results.

    ``epochs``, ``max_train_examples`` and ``glue_batch_size`` override GLUE's recipe (a quick
    check on a CPU); they are recorded in the results. ``convention`` (`scoring.CONVENTIONS`) is
    how minimal pairs are scored, recorded in the results so that the two are never mixed.
    ``skip_missing`` (a default or suite task list): tasks without data in ``data`` are skipped
    and named instead of being an error. ``temperatures``: the 2025 pipeline's temperature sweep
    (`scoring.temperature_grid`), reported apart from the T = 1 scores. ``glue_recipe``: 2024
    (the paper's LoRA recipe) or 2025 (the 2025 pipeline's full fine-tuning, `glue2025`, with
    ``glue_padding`` and ``glue_pooling``). ``zero_shot`` and ``tokenizer``: task files already
    read (`load_zero_shot_data`; they replace ``tasks``, ``data`` and ``skip_missing``) and the
    model's tokenizer already loaded, as a sweep over checkpoints of one run passes them.
    """
    check_model_folder(model_dir)
    if zero_shot is not None:
        if "glue" in zero_shot.tasks:
            raise ValueError("GLUE's files are not part of ZeroShotData")
        tasks, skipped = zero_shot.tasks, zero_shot.skipped
    else:
        tasks, skipped = select_tasks(tasks, data, skip_missing)
    only_2025 = [task for task in tasks if task in OTHER_2025_TASKS]
    if convention is None:  # the 2025-only tasks bring their pipeline's convention
        convention = "2025" if only_2025 else "2024"
    if convention not in CONVENTIONS:
        raise UserError(f"--convention {convention!r}; choose {' or '.join(CONVENTIONS)}")
    if glue_recipe not in ("2024", "2025"):
        raise UserError(f"--glue-recipe {glue_recipe!r}; choose 2024 or 2025")
    if (glue_padding, glue_pooling) != ("right", "first") and glue_recipe != "2025":
        raise UserError("--glue-padding and --glue-pooling apply to --glue-recipe 2025")
    if temperatures and convention != "2025":
        raise UserError("--temperature-sweep is the BabyLM 2025 pipeline's: add --convention 2025")
    if convention == "2024" and only_2025:
        raise UserError(
            f"{', '.join(only_2025)} exist only in the BabyLM 2025 pipeline; score them with "
            "--convention 2025 (or --suite babylm-2025)"
        )
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if max_items is not None and max_items < 1:
        raise UserError(f"--max-items must be at least 1, got {max_items}")
    glue_overrides = {
        "epochs": epochs,
        "max_train_examples": max_train_examples,
        "batch_size": glue_batch_size,
    }
    for key, value in glue_overrides.items():
        option = "--glue-batch-size" if key == "batch_size" else f"--{key.replace('_', '-')}"
        if value is not None and "glue" not in tasks:
            raise UserError(f"{option} applies to GLUE fine-tuning only; add glue to --tasks")
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    name = name or model_name(model_dir)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UserError(f"--name {name!r} cannot be a file name; use letters, digits, - and _")
    if zero_shot is None:
        zero_shot = load_zero_shot_data(tasks, data, skipped)
    data_by_task, data_2025 = zero_shot.pairs, zero_shot.other_2025
    glue_data = load_glue(data, only_task=len(tasks) == 1) if "glue" in tasks else None
    if glue_data is not None:
        for file in unrecognised_files(glue_data.folder):
            info(f"glue: {glue_data.folder / file} is not a known GLUE task's file; ignored")
    target = resolve_device(device)
    if tokenizer is None:
        tokenizer = load_tokenizer(model_dir)
    if convention == "2025" and not tokenizer.is_fast:
        raise UserError(
            f"{model_dir}: the 2025 convention needs a fast tokenizer (character offsets pick the "
            "tokens scored); this folder's tokenizer is a slow one"
        )
    for task, subtasks in data_by_task.items():  # refuse a tokenizer without prefix token now
        if convention == "2024" and needs_prefix([p for s in subtasks for p in s.pairs]):
            prefix = prefix_token(tokenizer, model_dir)
            info(f"{task}: empty contexts are conditioned on the prefix token {prefix.describe()}")
    if glue_data is not None:
        from tinyminds.evaluation import glue  # peft and the fine-tuning code: only when asked

        glue.pad_token_id(tokenizer, model_dir)  # refuse a tokenizer that cannot pad, now
        chosen = {k: v for k, v in glue_overrides.items() if v is not None}
        if glue_recipe == "2025":
            from tinyminds.evaluation import glue2025

            recipe_2025 = glue2025.Glue2025Recipe(
                **chosen, padding_side=glue_padding, pooling=glue_pooling
            )
        else:
            recipe = glue.GlueRecipe(**chosen)
    model = load_causal_lm(model_dir, target)
    header = {
        "model": _model_record(model_dir, name, model),
        "tinyminds_version": __version__,
        "device": str(target),
        "dtype": "float32",
        "batch_size": batch_size,
        "max_items": max_items,
        "convention": convention,
        "skipped": skipped,
        "temperature_sweep": list(temperatures),
    }
    writer = ResultsWriter(out_dir, name, header, tasks)
    for task in tasks:
        if task == "glue" and glue_recipe == "2025":
            glue2025.run_glue_2025(
                model_dir, tokenizer, glue_data, recipe_2025, target, writer.add_glue
            )
            continue
        if task == "glue":
            glue.run_glue(model_dir, tokenizer, glue_data, recipe, target, writer.add_glue)
            continue
        if task in data_2025:
            scored = score_2025_task(
                task, data_2025[task], model, tokenizer, batch_size, max_items, temperatures
            )
            writer.add(scored)
            info(
                f"{task}: {scored.metric} {scored.score:.4f} ({scored.n:,} items), "
                f"{scored.seconds:.1f} s"
            )
            continue
        subtasks = data_by_task[task]
        info(
            f"{task}: {len(subtasks)} subtasks, "
            f"{sum(len(s.pairs[:max_items]) for s in subtasks):,} pairs"
        )
        result = score_task(
            task,
            subtasks,
            model,
            tokenizer,
            batch_size,
            max_items,
            convention=convention,
            temperatures=temperatures,
        )
        writer.add(result)
        info(
            f"{task}: {100 * result.accuracy:.2f}% ({TASKS[task].label}, mean of "
            f"{len(result.subtasks)} subtasks), {result.ties} ties, {result.seconds:.1f} s"
        )
    predictions = writer.predictions_path if glue_data is not None else None
    return Evaluation(writer.summary(), writer.json_path, writer.pairs_path, predictions)
