"""GLUE by LoRA fine-tuning, the BabyLM 2024 recipe (SPEC §4), for any causal LM folder.

Per task: the causal LM is loaded as a sequence classifier (`AutoModelForSequenceClassification`,
which for GPT-2 and Llama puts a linear ``score`` head on the last non-padding token), LoRA adapters
are added through PEFT (task type SEQ_CLS; PEFT's default target modules for the architecture, e.g.
``c_attn`` for GPT-2, ``q_proj``/``v_proj`` for Llama; the new head is trained too, as a module to
save), and only those are trained: AdamW, linear warm-up over the first 6% of the steps then linear
decay to 0, gradients clipped to norm 1 (the Trainer default the BabyLM scripts ran with), seed 42,
at most 128 tokens per input. After every epoch the loss on the task's ``valid`` file is computed;
the epoch with the lowest one is kept, and its predictions on that file are the task's score.

Selecting the epoch on the file that is then scored is what the BabyLM fine-tuning scripts do (they
evaluate and pick the best checkpoint on the validation file; BabyLM's GLUE subsets have no other
labelled held-out split): scores are a little optimistic, and the results say so (``selection``).
MNLI-mismatched is predicted by the MNLI model of the epoch chosen on MNLI-matched.

On a GPU the forward passes run under bf16 autocast (weights, optimizer state and the loss stay in
float32); on the CPU everything is float32.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)
from transformers.utils import logging as hf_logging

from tinyminds.config import Range, check_ranges
from tinyminds.console import info, progress
from tinyminds.errors import UserError
from tinyminds.evaluation.glue_tasks import (
    GLUE_TASKS,
    Example,
    GlueData,
    accuracy,
    macro_average,
    majority_label,
    score,
)


@dataclass(frozen=True)
class GlueRecipe:
    """The fine-tuning recipe of SPEC §4; `tinyminds evaluate` overrides only epochs, batch size and
    the number of training examples (recorded in the results as ``overrides``)."""

    lora_r: Annotated[int, Range(1)] = 8
    """Rank of the LoRA update matrices."""
    lora_alpha: Annotated[int, Range(1)] = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.1
    """Dropout on the LoRA branch's input."""
    lr: Annotated[float, Range(0, low_open=True)] = 3e-4
    """Peak learning rate of AdamW."""
    weight_decay: Annotated[float, Range(0)] = 0.0
    """AdamW weight decay (the Trainer default the BabyLM scripts used)."""
    max_grad_norm: Annotated[float, Range(0)] = 1.0
    """Gradient clipping norm (the Trainer default)."""
    batch_size: Annotated[int, Range(1)] = 64
    """Training examples per optimizer step (and examples per evaluation batch)."""
    epochs: Annotated[int, Range(1)] = 32
    """Passes over the training file; the epoch with the lowest valid loss is kept."""
    warmup_ratio: Annotated[float, Range(0, 1)] = 0.06
    """Share of all steps spent warming the learning rate up linearly from 0; then linear decay."""
    seed: Annotated[int, Range(0)] = 42
    """Seeds the head's and the adapters' initialisation, the shuffling and dropout."""
    max_length: Annotated[int, Range(2)] = 128
    """Tokens per input (a pair is truncated longest-first), capped at the model's positions."""
    max_train_examples: Annotated[int, Range(1)] | None = None
    """Train on a random sample (seeded) of this many examples of each training file; None: all."""

    def __post_init__(self) -> None:
        check_ranges(self)


SELECTION = (
    "epoch with the lowest loss on the valid file, the same file the scores are computed on (as "
    "the BabyLM fine-tuning scripts do: BabyLM's GLUE subsets have no other labelled held-out split)"
)
INPUT = (
    "tokenizer(first, second, truncation=True, max_length) as the BabyLM fine-tuning scripts do; "
    "MultiRC first = 'Question: {question} Answer: {answer}', second = paragraph; WSC first = "
    '\'Does "{span2_text}" refer to "{span1_text}" in this passage?\', second = text'
)
BASELINE = (
    "the most frequent label of the training file (of the valid file where there is none, marked "
    "baseline_from), predicted for every valid example and scored with the task's metric"
)


def pad_token_id(tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> int:
    """The padding id of the classifier: the tokenizer's PAD, else its EOS (as the BabyLM scripts
    do for GPT-2), or a `UserError` saying that neither exists."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise UserError(
        f"{model_dir}: the tokenizer has neither a PAD nor an EOS token, so GLUE batches cannot be "
        f"padded; give it one (tokenizer.pad_token = ...) and save it"
    )


def encode(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int
) -> list[list[int]]:
    """Token ids of every example's (first, second) text pair, truncated longest-first."""
    firsts = [example.first for example in examples]
    seconds = [example.second for example in examples]
    if any(second is None for second in seconds):
        encoded = tokenizer(firsts, truncation=True, max_length=max_length)
    else:
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def load_classifier(
    model_dir: Path, num_labels: int, pad_id: int, recipe: GlueRecipe, device: torch.device
) -> nn.Module:
    """The causal LM of ``model_dir`` with a fresh classification head and LoRA adapters, in float32.

    Seeded first, so the head's and the adapters' random initialisation is the same in every run.
    """
    from peft import LoraConfig, TaskType, get_peft_model  # peft loads slowly: only when needed

    torch.manual_seed(recipe.seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialised" is the point, not news
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=num_labels, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError) as error:
        raise UserError(
            f"{model_dir}: cannot load it as a sequence classifier for GLUE ({_one_line(error)})"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = pad_id
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        modules_to_save=["classifier", "score"],  # the new head, whatever its name
    )
    with warnings.catch_warnings():
        # PEFT notes that GPT-2's Conv1D needs fan_in_fan_out (and sets it); transformers warns
        # about a deprecated attribute PEFT reads. Neither is the user's business.
        warnings.simplefilter("ignore")
        try:
            model = get_peft_model(model, config)
        except ValueError as error:
            raise UserError(f"{model_dir}: cannot add LoRA adapters ({_one_line(error)})") from None
    return model.to(device)


def _batch(
    rows: list[list[int]], labels: list[int], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, their attention mask and the labels, on ``device``."""
    width = max(len(row) for row in rows)
    ids = [row + [pad_id] * (width - len(row)) for row in rows]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row in rows]
    return (
        torch.tensor(ids, device=device),
        torch.tensor(mask, device=device),
        torch.tensor(labels, device=device),
    )


def _logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Float32 class logits; the forward pass under bf16 autocast on a GPU."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
        return model(input_ids=ids, attention_mask=mask).logits.float()


def predict(
    model: nn.Module,
    rows: list[list[int]],
    labels: list[int],
    pad_id: int,
    batch_size: int,
    bar: Any,
) -> tuple[float, list[int]]:
    """(mean cross-entropy, predicted label of each row), in the order given.

    Rows are batched by length (longest first) so that little padding is computed.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    predictions = [0] * len(rows)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            ids, mask, target = _batch(
                [rows[i] for i in chosen], [labels[i] for i in chosen], pad_id, device
            )
            logits = _logits(model, ids, mask)
            total += float(F.cross_entropy(logits, target, reduction="sum"))
            for i, prediction in zip(chosen, logits.argmax(-1).tolist(), strict=True):
                predictions[i] = prediction
            bar.update(1)
    return total / len(rows), predictions


def train_sample(n: int, recipe: GlueRecipe) -> list[int]:
    """Indices of the training examples used: all, or a seeded random sample (in file order)."""
    if recipe.max_train_examples is None or recipe.max_train_examples >= n:
        return list(range(n))
    return sorted(random.Random(recipe.seed).sample(range(n), recipe.max_train_examples))


@dataclass
class Scored:
    """One task's valid predictions with the model of the chosen epoch."""

    task: str
    labels: list[int]
    predictions: list[int]


@dataclass
class FineTuned:
    """What fine-tuning one task left: its scored valid files (mnli: mnli and mnli-mm) and how."""

    scored: list[Scored]
    record: dict[str, Any]


def fine_tune(
    task: str,
    data: GlueData,
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    recipe: GlueRecipe,
    device: torch.device,
) -> FineTuned:
    """Fine-tune on ``task``'s training file, keep the epoch with the lowest valid loss, predict its
    valid file (and those of the tasks evaluated with its model, e.g. mnli-mm)."""
    started = time.perf_counter()
    spec = GLUE_TASKS[task]
    train_file, valid_file = data.train[task], data.valid[task]
    assert train_file is not None and valid_file is not None
    also = [
        other
        for other, other_spec in GLUE_TASKS.items()
        if other_spec.model_of == task and data.valid[other] is not None
    ]
    pad_id = pad_token_id(tokenizer, model_dir)
    model = load_classifier(model_dir, spec.num_labels, pad_id, recipe, device)
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    max_length = min(recipe.max_length, positions) if positions else recipe.max_length

    used = train_sample(len(train_file.examples), recipe)
    train_rows = encode(tokenizer, [train_file.examples[i] for i in used], max_length)
    train_labels = [train_file.examples[i].label for i in used]
    valid_rows = encode(tokenizer, valid_file.examples, max_length)
    extra_rows = {
        other: encode(tokenizer, data.valid[other].examples, max_length)  # type: ignore[union-attr]
        for other in also
    }

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(used) / recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    warmup = math.ceil(recipe.warmup_ratio * total_steps)  # as the Trainer rounds it
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    shuffle = torch.Generator().manual_seed(recipe.seed)

    def batches(n: int) -> int:
        return math.ceil(n / recipe.batch_size)

    bar_total = recipe.epochs * (steps_per_epoch + batches(len(valid_rows)))
    bar_total += sum(batches(len(rows)) for rows in extra_rows.values())
    bar = progress(bar_total, f"glue {task}", unit="batch")
    losses: list[float] = []
    best_loss, best_epoch = math.inf, 0
    best_state: dict[str, torch.Tensor] = {}
    best_predictions: list[int] = []
    try:
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            order = torch.randperm(len(used), generator=shuffle).tolist()
            for start in range(0, len(order), recipe.batch_size):
                chosen = order[start : start + recipe.batch_size]
                ids, mask, target = _batch(
                    [train_rows[i] for i in chosen],
                    [train_labels[i] for i in chosen],
                    pad_id,
                    device,
                )
                loss = F.cross_entropy(_logits(model, ids, mask), target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, recipe.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
            valid_loss, predictions = predict(
                model, valid_rows, valid_file.labels, pad_id, recipe.batch_size, bar
            )
            losses.append(valid_loss)
            bar.set_postfix(epoch=epoch, valid_loss=f"{valid_loss:.4f}")
            if valid_loss < best_loss:
                best_loss, best_epoch, best_predictions = valid_loss, epoch, predictions
                best_state = {
                    name: p.detach().clone()
                    for name, p in model.named_parameters()
                    if p.requires_grad
                }
        scored = [Scored(task, valid_file.labels, best_predictions)]
        if also:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in best_state:
                        p.copy_(best_state[name])
            for other in also:
                labels = data.valid[other].labels  # type: ignore[union-attr]
                _, other_predictions = predict(
                    model, extra_rows[other], labels, pad_id, recipe.batch_size, bar
                )
                scored.append(Scored(other, labels, other_predictions))
    finally:
        bar.close()

    record = {
        "train_examples": len(used),
        "train_file_examples": len(train_file.examples),
        "train_file": str(train_file.path.resolve()),
        "train_sha256": train_file.sha256,
        "epochs": recipe.epochs,
        "best_epoch": best_epoch,
        "valid_loss": losses,
        "steps": total_steps,
        "warmup_steps": warmup,
        "max_length": max_length,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "frozen_parameters": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "lora_target_modules": sorted(model.peft_config["default"].target_modules),
        "trained": sorted({_trained_module(name) for name in best_state}),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return FineTuned(scored, record)


def _trained_module(parameter: str) -> str:
    """``base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight`` -> ``lora_A``,
    ``base_model.model.score.modules_to_save.default.weight`` -> ``score`` (what was trained)."""
    parts = parameter.split(".")
    if "modules_to_save" in parts:
        return parts[parts.index("modules_to_save") - 1]
    return next((part for part in parts if part.startswith("lora_")), parameter)


def _baseline(task: str, data: GlueData) -> dict[str, Any]:
    """The majority-class baseline of ``task``: the most frequent training label (of the model's
    training file, for mnli-mm), else the most frequent valid label, scored on the valid file."""
    valid = data.valid[task]
    if valid is None:
        return {"baseline": None, "baseline_label": None, "baseline_from": None}
    train = data.train[GLUE_TASKS[task].model_of or task]
    source, labels = ("train", train.labels) if train is not None else ("valid", valid.labels)
    label = majority_label(labels)
    return {
        "baseline": score(task, valid.labels, [label] * len(valid.labels)),
        "baseline_label": label,
        "baseline_from": source,
    }


def run_glue(
    model_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    data: GlueData,
    recipe: GlueRecipe,
    device: torch.device,
    publish: Callable[[dict[str, Any], list[dict[str, Any]]], None],
) -> dict[str, Any]:
    """Fine-tune and score every GLUE task that has a training file, in the order of `GLUE_TASKS`.

    ``publish(section, predictions)`` is called once before the first task (missing tasks already
    listed) and after every finished one, with the results section so far and every per-example
    prediction (task, index in the valid file, label, prediction; no text), so a later failure
    keeps what is done. Returns the final section.
    """
    started = time.perf_counter()
    defaults = GlueRecipe()
    overrides = {
        key: value for key, value in asdict(recipe).items() if value != getattr(defaults, key)
    }
    tasks: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for task, spec in GLUE_TASKS.items():
        valid = data.valid[task]
        entry: dict[str, Any] = {"metric": spec.metric, "n": len(valid.examples) if valid else None}
        entry.update(_baseline(task, data))
        if valid is not None:
            entry.update({"valid_file": str(valid.path.resolve()), "valid_sha256": valid.sha256})
        reason = data.missing(task)
        if reason:
            missing[task] = reason
            entry["missing"] = reason
        tasks[task] = entry
    to_train = [
        task for task, spec in GLUE_TASKS.items() if not spec.model_of and task not in missing
    ]
    pending = [task for task in GLUE_TASKS if task not in missing]
    predictions: list[dict[str, Any]] = []

    def section() -> dict[str, Any]:
        scores = {t: e["score"] for t, e in tasks.items() if "score" in e}
        macro = macro_average(scores)
        covered = macro["tasks"]
        macro["baseline"] = (
            sum(tasks[t]["baseline"] for t in covered) / len(covered) if covered else None
        )
        return {
            "data_folder": str(data.folder.resolve()),
            "recipe": asdict(recipe),
            "overrides": overrides,
            "selection": SELECTION,
            "input": INPUT,
            "baseline": BASELINE,
            "device": str(device),
            "autocast": "bf16" if device.type == "cuda" else None,
            "missing": missing,
            "pending": list(pending),
            "macro": macro,
            "seconds": round(time.perf_counter() - started, 3),
            "tasks": tasks,
        }

    for task, reason in missing.items():
        info(f"glue {task}: missing ({reason})")
    publish(section(), predictions)
    for task in to_train:
        n_train = len(data.train[task].examples)  # type: ignore[union-attr]
        used = len(train_sample(n_train, recipe))
        info(
            f"glue {task}: fine-tuning on {used:,} of {n_train:,} training examples, "
            f"{recipe.epochs} epochs"
        )
        result = fine_tune(task, data, model_dir, tokenizer, recipe, device)
        for scored in result.scored:
            entry = tasks[scored.task]
            entry["score"] = score(scored.task, scored.labels, scored.predictions)
            entry["accuracy"] = accuracy(scored.labels, scored.predictions)
            if scored.task == task:
                entry.update(result.record)
            else:  # mnli-mm: predicted by the mnli model of mnli's chosen epoch
                entry.update({"model": task, "best_epoch": result.record["best_epoch"]})
            predictions.extend(
                {"task": scored.task, "index": i, "label": label, "prediction": prediction}
                for i, (label, prediction) in enumerate(
                    zip(scored.labels, scored.predictions, strict=True)
                )
            )
            pending.remove(scored.task)
            info(
                f"glue {scored.task}: {GLUE_TASKS[scored.task].metric} "
                f"{100 * entry['score']:.2f} (majority baseline {100 * entry['baseline']:.2f}), "
                f"best epoch {result.record['best_epoch']} of {recipe.epochs}, "
                f"{result.record['seconds']:.1f} s"
            )
        publish(section(), predictions)
    return section()
