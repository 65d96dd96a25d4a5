"""GLUE the BabyLM 2025 way (SPEC-2025 §4): full fine-tuning with a small head on one position.

Per task the whole model is trained: the body (`AutoModel`: the causal LM without its LM head)
and a new head ``LayerNorm(no affine) -> Linear(H, H) -> GELU -> LayerNorm(no affine) ->
Dropout(0.1) -> Linear(H, labels)`` on the hidden state of one position. The 2025 pipeline pools
**position 0** (its scripts pass neither ``--causal`` nor ``--take_final``): with right padding a
causal body has seen only the first token there. ``pooling="last"`` takes the last real token
instead, and ``padding_side`` may be ``left``; both are recorded, because pipeline issue #38
measured GPT-2 models about 6 points apart between left and right padding.

AdamW over every parameter (lr 3e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.01), 6% linear
warm-up then cosine decay to 0.1 x lr, shuffled batches with the last incomplete one dropped, seed
42, inputs of at most 512 tokens (the tokenizer's pair template, truncated longest-first). Batch
and epochs per task as the pipeline's script sets them; after every epoch the valid file is
scored with the task's selection metric (F1 for MRPC and QQP, accuracy otherwise) and the best
epoch (strict ``>``: the earliest of equal ones) gives the predictions. The tasks are boolq, mnli,
mrpc, multirc, qqp, rte and wsc (CoLA, SST-2, MNLI-mm and QNLI are not in the 2025 suite); one
without a training file is named as missing. The headline: F1 for MRPC and QQP, accuracy for the
rest, macro-averaged over the tasks run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from tinyminds.config import Range, check_ranges
from tinyminds.console import info, progress
from tinyminds.errors import UserError
from tinyminds.evaluation.glue import encode
from tinyminds.evaluation.glue_tasks import (
    GLUE_TASKS,
    GlueData,
    accuracy,
    f1,
    majority_label,
)

TASK_SETTINGS = {
    "boolq": (16, 10),
    "mnli": (32, 10),
    "mrpc": (32, 10),
    "multirc": (16, 10),
    "qqp": (32, 10),
    "rte": (32, 10),
    "wsc": (32, 30),
}
"""Task -> (batch size, epochs), as the 2025 pipeline's `eval_finetuning.sh` sets them."""
SELECTION = {"mrpc": "f1", "qqp": "f1"}
"""The metric the best epoch is chosen on and reported with (accuracy for the others)."""


@dataclass(frozen=True)
class Glue2025Recipe:
    """The 2025 fine-tuning recipe; ``None`` batch size and epochs take each task's own."""

    lr: Annotated[float, Range(0, low_open=True)] = 3e-5
    """Peak learning rate of AdamW (every parameter trained)."""
    weight_decay: Annotated[float, Range(0)] = 0.01
    """AdamW weight decay, on every parameter."""
    warmup_ratio: Annotated[float, Range(0, 1)] = 0.06
    """Share of the steps spent warming the learning rate up linearly."""
    min_lr_ratio: Annotated[float, Range(0, 1)] = 0.1
    """The cosine decay ends at this fraction of the peak learning rate."""
    dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.1
    """Dropout before the head's last layer."""
    batch_size: Annotated[int, Range(1)] | None = None
    """Training examples per step; None: the task's (16 or 32)."""
    epochs: Annotated[int, Range(1)] | None = None
    """Passes over the training file; None: the task's (10, WSC 30)."""
    max_length: Annotated[int, Range(2)] = 512
    """Tokens per input, capped at the model's positions."""
    seed: Annotated[int, Range(0)] = 42
    """Seeds the head, the shuffling and dropout."""
    padding_side: Literal["right", "left"] = "right"
    """Where batches are padded (the pipeline's default: right)."""
    pooling: Literal["first", "last"] = "first"
    """The position the head reads: first (position 0, the pipeline's) or the last real token."""
    max_train_examples: Annotated[int, Range(1)] | None = None
    """Train on a seeded random sample of this many examples per task; None: all."""

    def __post_init__(self) -> None:
        check_ranges(self)


class Classifier(nn.Module):
    """A model body and the 2025 pipeline's head on one pooled position."""

    def __init__(self, body: nn.Module, hidden: int, labels: int, recipe: Glue2025Recipe) -> None:
        super().__init__()
        self.body = body
        self.pooling = recipe.pooling
        self.head = nn.Sequential(
            nn.LayerNorm(hidden, eps=1e-5, elementwise_affine=False),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=1e-5, elementwise_affine=False),
            nn.Dropout(recipe.dropout),
            nn.Linear(hidden, labels),
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "first":
            pooled = states[:, 0]
        else:  # the last real token, wherever the padding is
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (positions * mask).argmax(dim=1)
            pooled = states[torch.arange(len(states), device=states.device), last]
        return self.head(pooled.float())


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay from 1 to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress_, 1.0)))


def _batch(
    rows: list[list[int]], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        padding = width - len(row)
        if side == "right":
            ids.append(row + [pad_id] * padding)
            mask.append([1] * len(row) + [0] * padding)
        else:
            ids.append([pad_id] * padding + row)
            mask.append([0] * padding + [1] * len(row))
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def metric_of(task: str, labels: list[int], predictions: list[int]) -> float:
    return (f1 if SELECTION.get(task) == "f1" else accuracy)(labels, predictions)


def _predict(
    model: Classifier, rows: list[list[int]], pad_id: int, recipe: Glue2025Recipe, batch: int
) -> list[int]:
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    predictions = [0] * len(rows)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch]
            ids, mask = _batch([rows[i] for i in chosen], pad_id, recipe.padding_side, device)
            for i, label in zip(chosen, model(ids, mask).argmax(-1).tolist(), strict=True):
                predictions[i] = label
    return predictions


def fine_tune_2025(
    task: str,
    data: GlueData,
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Glue2025Recipe,
    device: torch.device,
) -> tuple[list[int], dict[str, Any]]:
    """Fine-tune on ``task`` and return the best epoch's valid predictions and a record."""
    started = time.perf_counter()
    train_file, valid_file = data.train[task], data.valid[task]
    assert train_file is not None and valid_file is not None
    if tokenizer.pad_token_id is None:  # the pipeline has no fallback either
        raise UserError(f"{model_dir}: GLUE 2025 needs a tokenizer with a PAD token")
    pad_id = int(tokenizer.pad_token_id)
    default_batch, default_epochs = TASK_SETTINGS[task]
    batch = recipe.batch_size or default_batch
    epochs = recipe.epochs or default_epochs
    torch.manual_seed(recipe.seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        body = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{model_dir}: cannot load its body for GLUE ({error})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    hidden = int(getattr(body.config, "hidden_size", 0) or body.config.n_embd)
    model = Classifier(body, hidden, GLUE_TASKS[task].num_labels, recipe).to(device)
    positions = getattr(body.config, "n_positions", None) or getattr(
        body.config, "max_position_embeddings", None
    )
    max_length = min(recipe.max_length, positions) if positions else recipe.max_length
    used = list(range(len(train_file.examples)))
    if recipe.max_train_examples is not None and recipe.max_train_examples < len(used):
        used = sorted(random.Random(recipe.seed).sample(used, recipe.max_train_examples))
    train_rows = encode(tokenizer, [train_file.examples[i] for i in used], max_length)
    train_labels = [train_file.examples[i].label for i in used]
    valid_rows = encode(tokenizer, valid_file.examples, max_length)
    steps_per_epoch = max(1, len(used) // batch)  # drop_last
    total = epochs * steps_per_epoch
    warmup = max(1, math.ceil(recipe.warmup_ratio * total)) if recipe.warmup_ratio else 0
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=recipe.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=recipe.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, recipe.min_lr_ratio)
    )
    shuffle = torch.Generator().manual_seed(recipe.seed)
    scores: list[float] = []
    best_score, best_epoch, best_predictions = -math.inf, 0, []
    bar = progress(epochs * steps_per_epoch, f"glue-2025 {task}", unit="step")
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(used), generator=shuffle).tolist()
            for start in range(0, steps_per_epoch * batch, batch):
                chosen = order[start : start + batch]
                if len(chosen) < batch and len(used) >= batch:
                    break  # drop_last
                ids, mask = _batch(
                    [train_rows[i] for i in chosen], pad_id, recipe.padding_side, device
                )
                target = torch.tensor([train_labels[i] for i in chosen], device=device)
                loss = F.cross_entropy(model(ids, mask), target)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
            predictions = _predict(model, valid_rows, pad_id, recipe, batch)
            value = metric_of(task, valid_file.labels, predictions)
            scores.append(value)
            if value > best_score:  # strict: the earliest of equal epochs
                best_score, best_epoch, best_predictions = value, epoch, predictions
    finally:
        bar.close()
    record = {
        "train_examples": len(used),
        "train_file_examples": len(train_file.examples),
        "train_file": str(train_file.path.resolve()),
        "train_sha256": train_file.sha256,
        "epochs": epochs,
        "batch_size": batch,
        "best_epoch": best_epoch,
        "valid_scores": scores,
        "steps": total,
        "warmup_steps": warmup,
        "max_length": max_length,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return best_predictions, record


def run_glue_2025(
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    data: GlueData,
    recipe: Glue2025Recipe,
    device: torch.device,
    publish: Callable[[dict[str, Any], list[dict[str, Any]]], None],
) -> dict[str, Any]:
    """Every 2025 GLUE task with a training file, published after each (see `glue.run_glue`)."""
    started = time.perf_counter()
    tasks: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for task in TASK_SETTINGS:
        metric = SELECTION.get(task, "accuracy")
        valid = data.valid[task]
        entry: dict[str, Any] = {"metric": metric, "n": len(valid.examples) if valid else None}
        if valid is not None:
            train = data.train[task]
            labels = train.labels if train is not None else valid.labels
            label = majority_label(labels)
            entry["baseline"] = metric_of(task, valid.labels, [label] * len(valid.labels))
            entry["baseline_from"] = "train" if train is not None else "valid"
            entry.update({"valid_file": str(valid.path.resolve()), "valid_sha256": valid.sha256})
        else:
            entry["baseline"] = None
        reason = data.missing(task)
        if reason:
            missing[task] = reason
            entry["missing"] = reason
        tasks[task] = entry
    pending = [task for task in TASK_SETTINGS if task not in missing]
    predictions: list[dict[str, Any]] = []

    def section() -> dict[str, Any]:
        covered = [t for t in TASK_SETTINGS if "score" in tasks[t]]
        mean = (lambda key: sum(tasks[t][key] for t in covered) / len(covered)) if covered else None
        return {
            "recipe_name": "babylm-2025",
            "data_folder": str(data.folder.resolve()),
            "recipe": asdict(recipe),
            "overrides": {
                k: v for k, v in asdict(recipe).items() if v != getattr(Glue2025Recipe(), k)
            },
            "selection": "the epoch with the best selection metric on the valid file (strict >), "
            "as the 2025 pipeline does",
            "padding_side": recipe.padding_side,
            "pooling": "position 0" if recipe.pooling == "first" else "the last real token",
            "padding_note": "pipeline issue #38: GPT-2 models differ by about 6 points between "
            "left and right padding",
            "device": str(device),
            "missing": missing,
            "pending": list(pending),
            "macro": {
                "score": mean("score") if mean else None,
                "baseline": mean("baseline") if mean else None,
                "tasks": covered,
                "covered": len(covered),
                "of": len(TASK_SETTINGS),
                "complete": len(covered) == len(TASK_SETTINGS),
            },
            "seconds": round(time.perf_counter() - started, 3),
            "tasks": tasks,
        }

    for task, reason in missing.items():
        info(f"glue {task}: missing ({reason})")
    publish(section(), predictions)
    for task in list(pending):
        chosen, record = fine_tune_2025(task, data, model_dir, tokenizer, recipe, device)
        labels = data.valid[task].labels  # type: ignore[union-attr]
        entry = tasks[task]
        entry["score"] = metric_of(task, labels, chosen)
        entry["accuracy"] = accuracy(labels, chosen)
        entry.update(record)
        predictions.extend(
            {"task": task, "index": i, "label": label, "prediction": prediction}
            for i, (label, prediction) in enumerate(zip(labels, chosen, strict=True))
        )
        pending.remove(task)
        info(
            f"glue {task}: {entry['metric']} {100 * entry['score']:.2f}, best epoch "
            f"{record['best_epoch']} of {record['epochs']}"
        )
        publish(section(), predictions)
    return section()
