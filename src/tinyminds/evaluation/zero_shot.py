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
from tinyminds.evaluation.glue_tasks import load_glue, unrecognised_files
from tinyminds.evaluation.results import ResultsWriter, TaskResult, subtask_result
from tinyminds.evaluation.scoring import needs_prefix, pair_requests, prefix_token, score_requests
from tinyminds.evaluation.tasks import TASKS, Subtask, load_tasks

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
) -> TaskResult:
    """Score every pair of every subtask of ``task`` in one batched pass, then decide and count.

    ``share_prefixes``: see `scoring.score_requests` (None: chosen by device and model size)."""
    started = time.perf_counter()
    chosen = [s.pairs[:max_items] for s in subtasks]  # [:None] keeps them all
    pairs = [pair for selected in chosen for pair in selected]
    prefix = prefix_token(tokenizer) if needs_prefix(pairs) else None
    requests = pair_requests(tokenizer, pairs, prefix)
    scores = score_requests(
        model, requests, batch_size, description=task, share_prefixes=share_prefixes
    )
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
    return TaskResult(task, results, prefix_record, time.perf_counter() - started, records)


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
) -> Evaluation:
    """Evaluate the causal LM in ``model_dir`` on ``tasks`` read from ``data``; write the results.

    ``epochs``, ``max_train_examples`` and ``glue_batch_size`` override GLUE's recipe (a quick
    check on a CPU); they are recorded in the results.
    """
    check_model_folder(model_dir)
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
    data_by_task = load_tasks(tasks, data)
    glue_data = load_glue(data, only_task=len(tasks) == 1) if "glue" in tasks else None
    if glue_data is not None:
        for file in unrecognised_files(glue_data.folder):
            info(f"glue: {glue_data.folder / file} is not a known GLUE task's file; ignored")
    target = resolve_device(device)
    tokenizer = load_tokenizer(model_dir)
    for task, subtasks in data_by_task.items():  # refuse a tokenizer without prefix token now
        if needs_prefix([pair for subtask in subtasks for pair in subtask.pairs]):
            prefix = prefix_token(tokenizer, model_dir)
            info(f"{task}: empty contexts are conditioned on the prefix token {prefix.describe()}")
    if glue_data is not None:
        from tinyminds.evaluation import glue  # peft and the fine-tuning code: only when asked

        glue.pad_token_id(tokenizer, model_dir)  # refuse a tokenizer that cannot pad, now
        recipe = glue.GlueRecipe(**{k: v for k, v in glue_overrides.items() if v is not None})
    model = load_causal_lm(model_dir, target)
    header = {
        "model": _model_record(model_dir, name, model),
        "tinyminds_version": __version__,
        "device": str(target),
        "dtype": "float32",
        "batch_size": batch_size,
        "max_items": max_items,
    }
    writer = ResultsWriter(out_dir, name, header, tasks)
    for task in tasks:
        if task == "glue":
            glue.run_glue(model_dir, tokenizer, glue_data, recipe, target, writer.add_glue)
            continue
        subtasks = data_by_task[task]
        info(
            f"{task}: {len(subtasks)} subtasks, "
            f"{sum(len(s.pairs[:max_items]) for s in subtasks):,} pairs"
        )
        result = score_task(task, subtasks, model, tokenizer, batch_size, max_items)
        writer.add(result)
        info(
            f"{task}: {100 * result.accuracy:.2f}% ({TASKS[task].label}, mean of "
            f"{len(result.subtasks)} subtasks), {result.ties} ties, {result.seconds:.1f} s"
        )
    predictions = writer.predictions_path if glue_data is not None else None
    return Evaluation(writer.summary(), writer.json_path, writer.pairs_path, predictions)
