"""The training engine: one loop for every objective, readable top to bottom.

`train` runs epochs over the prepared chunks: a new seeded permutation each epoch, micro-batches
split over data-parallel processes, gradient accumulation, mixed precision on a GPU, clipping, AdamW
with warm-up + cosine, periodic atomic checkpoints, validation at each epoch's end, and export of the
best epoch (by validation CE) as a Hugging Face model folder. Objectives (`objectives.py`) decide
what the loss is; nothing here knows whether it trains a teacher or distills a student. An objective
that trains a model of its own in separate optimizer steps (MATE-KD's generator, `SideSteps`) gets
them run before the student's steps, on the batches the student reads next (`run_side_steps`).

Every random choice is a function of the seed and the step, and the random-number states are
saved in each checkpoint, so a run killed at any point and resumed ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.utils import logging as hf_logging

from tinyminds import __version__
from tinyminds.config import from_dict, to_dict
from tinyminds.console import info, progress
from tinyminds.data.chunks import (
    PreparedData,
    chunks_read,
    epoch_permutation,
    load_prepared,
    validation_subset,
)
from tinyminds.data.tokenizer import (
    load_mlm_tokenizer,
    load_tokenizer,
    mlm_tokenizer_hash,
    save_hf_tokenizer,
    tokenizer_hash,
    warn_if_not_portable,
)
from tinyminds.devices import to_device
from tinyminds.errors import UserError
from tinyminds.files import (
    check_not_a_file,
    folder_lock,
    to_json,
    write_json_atomic,
    write_text_atomic,
)
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training import checkpoint
from tinyminds.training.config import TrainConfig
from tinyminds.training.distributed import DistContext
from tinyminds.training.metrics import MetricsLog, read_metrics
from tinyminds.training.milestones import (
    MILESTONES_FOLDER,
    milestone_name,
    milestone_words,
    saved_milestones,
)
from tinyminds.training.objectives import (
    Batch,
    CausalLMObjective,
    Objective,
    SetupContext,
    SideSteps,
)
from tinyminds.training.objectives.mlm import MLMObjective
from tinyminds.training.schedule import cosine_with_warmup

RELOCATABLE = ("out",)
"""Config keys that may differ when a run is resumed: the run folder may have been moved."""
VALIDATION_EXTRAS = ("kind", "step", "epoch", "tokens", "words", "perplexity")
"""Fields of a ``val`` record that are not the objective's metrics."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    best_epoch: int
    best_val_ce: float
    validation: list[dict[str, Any]]
    """One record per validated epoch: epoch, step and every metric of the objective."""
    parameters: int
    steps: int
    seconds: float
    tokens_per_second: float
    setup_seconds: float = 0.0
    """Time of the objective's set-up (loading teachers, building a teacher cache), part of
    ``seconds``."""
    words_seen: int = 0
    """Training words the run read, repeats counted (its tokens times the data's words per
    token): the exposure the BabyLM rules limit (100M words in the 2025 strict-small track)."""
    milestones: list[str] = field(default_factory=list)
    """The word-milestone model folders in ``RUN/milestones`` (``chck_{N}M``), in order."""


@dataclass
class _LoopState:
    step: int = 0
    validated_epochs: int = 0
    best_ce: float = math.inf
    best_epoch: int = -1
    validation: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str, context: DistContext) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but no CUDA GPU is available; use device=cpu")
        if context.enabled:
            return torch.device("cuda", context.local_rank)
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None for plain fp32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision=fp16 needs a GPU; use fp32 or bf16 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_same_tokenizer(model_dir: Path, data: PreparedData) -> None:
    """Refuse a model folder whose tokenizer is not the prepared data's."""
    model_hash = tokenizer_hash(model_dir)
    if model_hash != data.tokenizer_hash:
        raise UserError(
            f"tokenizer of {model_dir} (hash {model_hash[:12]}) differs from the tokenizer of the "
            f"prepared data {data.folder} (hash {data.tokenizer_hash[:12]})"
        )


def _load_or_build_model(config: TrainConfig, data: PreparedData) -> nn.Module:
    torch.manual_seed(config.seed)
    if config.init_from:
        source = Path(config.init_from)
        if not (source / "config.json").is_file():
            raise UserError(f"init_from={source}: not a Hugging Face model folder (no config.json)")
        if masked_lm_extra(config):
            if mlm_tokenizer_hash(data.tokenizer_dir) != tokenizer_hash(source):
                raise UserError(f"init_from={source}: its tokenizer is not the data's plus [MASK]")
        else:
            check_same_tokenizer(source, data)
        warn_if_not_portable(source)
        loader = AutoModelForCausalLM if masked_lm_extra(config) == 0 else AutoModelForMaskedLM
        model = loader.from_pretrained(str(source))
        if model.config.vocab_size != data.vocab_size + masked_lm_extra(config):
            raise UserError(
                f"init_from={source} has a vocabulary of {model.config.vocab_size} tokens, "
                f"the data {data.folder} {data.vocab_size}"
            )
        return model
    return build_model(get_spec(config.model), data.vocab_size + masked_lm_extra(config))


def masked_lm_extra(config: TrainConfig) -> int:
    """1 for a masked LM (its vocabulary is the data's plus ``[MASK]``), 0 for a causal LM."""
    return 0 if get_spec(config.model).is_causal_lm else 1


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: biases and norm weights (1-D) are left alone, as transformers does."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> bool:
    """Refuse to overwrite a started run unless resuming it with the same config (reads only).

    Returns True when this continues an earlier run (``resume`` and a saved config of the same run).
    Every process checks before any of them writes (see `_train`), so that under torchrun no
    process mistakes the config that the main process has just written for an earlier run.
    """
    saved = run_dir / "config.yaml"
    trained = bool(checkpoint.checkpoint_folders(run_dir / "checkpoints")) or bool(
        read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    )
    if saved.is_file() and not trained:
        # A run refused or stopped before its first logged step: nothing to keep or resume, so
        # its config does not block the corrected command.
        return False
    if resume and saved.is_file():
        previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        # ``out`` is where the folder is now: a run folder moved or copied elsewhere resumes.
        # A key the saved config lacks was added to tinyminds after that run started: its
        # default is what the run used.
        defaults = to_dict(type(config)(model=config.model))
        differs = [
            k
            for k, v in to_dict(config).items()
            if k not in RELOCATABLE and previous.get(k, defaults[k]) != v
        ]
        if differs:
            raise UserError(
                f"--resume: {saved} differs from this config in: {', '.join(differs)}; "
                "resume with the same recipe and overrides"
            )
        return True
    if not resume and (saved.exists() or trained):
        raise UserError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, "
            "or choose another out=..."
        )
    return False


def export_model(
    model: nn.Module,
    data: PreparedData,
    target: Path,
    info_record: dict[str, Any],
    masked_lm: bool = False,
) -> None:
    """Save ``model`` + tokenizer as a Hugging Face folder, replacing ``target`` atomically.

    A masked LM is saved with the data's tokenizer plus ``[MASK]`` (its vocabulary)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    hf_logging.disable_progress_bar()  # a one-shard "Writing model shards" bar is only noise
    model.save_pretrained(str(staging))
    tokenizer = load_mlm_tokenizer if masked_lm else load_tokenizer
    save_hf_tokenizer(tokenizer(data.tokenizer_dir), staging)
    (staging / "tinyminds.json").write_text(to_json(info_record) + "\n", encoding="utf-8")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def train(
    config: TrainConfig,
    *,
    objective: Objective | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``config.model`` on ``config.data`` with ``objective``.

    The default objective is next-token cross-entropy for a causal LM, and masked-token
    cross-entropy (`MLMObjective`, ``[MASK]`` = the id after the data's vocabulary) for a masked LM
    such as the MATE-KD generator.
    """
    started = time.perf_counter()
    if not config.data:
        raise UserError(
            "no data folder: pass data=DATA_DIR (a folder written by tinyminds prepare)"
        )
    data = load_prepared(Path(config.data))
    device_type = (
        "cuda"
        if config.device.startswith("cuda")
        or (config.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    context = DistContext.from_env(device_type)
    try:
        if objective is None:
            if masked_lm_extra(config) and not 0.0 < config.mask_prob < 1.0:
                raise UserError(f"mask_prob must lie between 0 and 1, got {config.mask_prob}")
            objective = (
                MLMObjective(data.vocab_size, data.vocab_size, config.mask_prob)
                if masked_lm_extra(config)
                else CausalLMObjective()
            )
        device = resolve_device(config.device, context)
        run_dir = Path(config.out or f"runs/{config.recipe or config.model}")
        check_not_a_file(run_dir, "out=")
        geometry = _geometry(config, data, context.world_size)  # before anything is written
        with _run_folder_lock(run_dir, context, device, config):
            return _train(config, data, objective, context, resume, started, run_dir, geometry)
    finally:
        context.close()


@dataclass(frozen=True)
class _Geometry:
    """How a run walks the data: batch shapes and step counts."""

    local_batch: int
    """Chunks per micro-batch on this process."""
    steps_per_epoch: int
    total_steps: int


def _geometry(config: TrainConfig, data: PreparedData, world: int) -> _Geometry:
    """The run's batch geometry, or a `UserError` saying why the data or batch cannot make one."""
    batch, accum = config.batch_size, config.grad_accum
    if batch % world:
        raise UserError(f"batch_size={batch} is not divisible by the {world} processes")
    train_chunks = len(data.chunks("train"))  # a truncated array fails here, before any write
    data.chunks("dev")
    steps_per_epoch = train_chunks // (batch * accum)
    if steps_per_epoch == 0:
        raise UserError(
            f"{data.folder} has {train_chunks} training chunks, fewer than one optimizer step "
            f"(batch_size x grad_accum = {batch * accum}); lower batch_size or grad_accum"
        )
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    return _Geometry(batch // world, steps_per_epoch, total_steps)


@contextmanager
def _run_folder_lock(
    run_dir: Path, context: DistContext, device: torch.device, config: TrainConfig
) -> Iterator[None]:
    """The main process holds ``RUN/.lock`` for the run (`tinyminds.files.folder_lock`): a second
    command writing into the same run folder is refused, naming the holder. Under torchrun every
    process learns whether the main one got it."""
    with ExitStack() as stack:
        failure = None
        if context.is_main:
            try:
                stack.enter_context(
                    folder_lock(run_dir, f"tinyminds run of {config.recipe or config.model}")
                )
            except UserError as error:
                failure = error
        refused = context.sum(torch.tensor(float(failure is not None), device=device)).item()
        if failure is not None:
            raise failure
        if refused:
            raise UserError(f"{run_dir} is in use by another run (see the main process's message)")
        yield


def _train(
    config: TrainConfig,
    data: PreparedData,
    objective: Objective,
    context: DistContext,
    resume: bool,
    started: float,
    run_dir: Path,
    geometry: _Geometry,
) -> TrainResult:
    device = resolve_device(config.device, context)
    amp_dtype = resolve_precision(config.precision, device)
    continuing = _check_run_dir(run_dir, config, resume)
    context.barrier()
    if context.is_main and not continuing:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    context.barrier()

    # --- data: batch geometry (`_geometry`), validation subset --------------------------------------
    train_chunks, dev_chunks = data.chunks("train"), data.chunks("dev")
    batch, accum, world = config.batch_size, config.grad_accum, context.world_size
    local_batch = geometry.local_batch
    steps_per_epoch, total_steps = geometry.steps_per_epoch, geometry.total_steps
    chunk_tokens = data.chunk_size
    val_local = np.array_split(
        validation_subset(len(dev_chunks), config.eval_chunks, config.eval_seed), world
    )[context.rank]

    # --- model, optimizer, schedule ----------------------------------------------------------------
    model = _load_or_build_model(config, data).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    setup = getattr(objective, "setup", None)
    setup_started = time.perf_counter()
    if setup is not None:  # e.g. teachers to the device, a teacher cache built by every process
        setup(
            SetupContext(
                device=device,
                amp_dtype=amp_dtype,
                rank=context.rank,
                world_size=world,
                barrier=context.barrier,
                data=data,
                run_dir=run_dir,
                train_rows=chunks_read(
                    len(train_chunks), config.seed, batch * accum, steps_per_epoch, total_steps
                ),
                mean=context.mean,
                total_steps=total_steps,
                grad_accum=accum,
            )
        )
    setup_seconds = time.perf_counter() - setup_started
    # An objective with optimizer steps of its own (MATE-KD's generator): see `run_side_steps`.
    side = objective if isinstance(objective, SideSteps) else None
    trainable: list[nn.Module] = [model]
    objective_params: list[nn.Parameter] = []
    if isinstance(objective, nn.Module):  # objectives may own parameters (e.g. projection heads)
        objective.to(device)
        trainable.append(objective)
        objective_params = [p for p in objective.parameters() if p.requires_grad]
    torch.manual_seed(config.seed + 1000 * context.rank)  # dropout streams differ per process
    groups = [g for module in trainable for g in _param_groups(module, config.weight_decay)]
    trainable_params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters: 5-8% on the CPU
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: cosine_with_warmup(
            step, config.warmup_steps, total_steps, config.min_lr_ratio
        ),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    forward_model: nn.Module = model
    if context.enabled:
        forward_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        forward_model = torch.compile(forward_model)

    # --- resume ----------------------------------------------------------------------------------
    state = _LoopState()
    checkpoints = run_dir / "checkpoints"
    metrics = MetricsLog(
        run_dir,
        enabled=context.is_main,
        tensorboard=config.tensorboard,
        wandb=config.wandb,
        wandb_project=config.wandb_project,
        config=to_dict(config),
    )
    loaded = checkpoint.load_latest(checkpoints, context.rank) if resume else None
    restored_window: dict[str, float] = {}
    restored_window_steps = 0
    if loaded is not None:
        saved, rng = loaded
        restored_window = saved.get("window", {})
        restored_window_steps = saved.get("window_steps", 0)
        model.load_state_dict(saved["model"])
        if hasattr(objective, "load_state_dict") and saved.get("objective") is not None:
            objective.load_state_dict(saved["objective"])  # parameters, or state (TAID's t)
        if side is not None:
            side.load_side_state(saved["side"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state = _LoopState(**saved["loop"])
        if rng is not None:
            checkpoint.set_rng_state(rng)
        metrics.truncate_after(state.step)
        info(f"resumed {run_dir} at step {state.step:,} of {total_steps:,}")
    elif continuing:
        info(f"no checkpoint in {checkpoints}: starting again from step 0")
        metrics.truncate_after(-1)
    context.barrier()

    info(
        f"training {config.recipe or config.model}: {parameters:,} parameters, "
        f"{len(train_chunks):,} chunks, {total_steps:,} steps ({steps_per_epoch:,} per epoch), "
        f"effective batch {batch * accum}, {world} process(es), {device}, "
        f"{str(amp_dtype).replace('torch.', '') if amp_dtype else 'fp32'}"
    )

    def autocast() -> Any:
        if amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def to_batch(indices: np.ndarray, chunks: np.ndarray, split: str) -> Batch:
        ids = torch.from_numpy(chunks[indices].astype(np.int64))
        return Batch(to_device(ids, device), torch.from_numpy(indices), split)

    def validate() -> dict[str, float]:
        model.eval()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        local_eval = max(1, config.eval_batch_size // world)
        with torch.no_grad(), autocast():
            for start in range(0, len(val_local), local_eval):
                indices = val_local[start : start + local_eval]
                output = objective(model, to_batch(indices, dev_chunks, "dev"))
                for key, value in output.metrics.items():
                    sums[key] += value.float() * len(indices)
        model.train()
        keys = sorted(sums)
        totals = context.sum(
            torch.stack(
                [*(sums[k] for k in keys), torch.tensor(float(len(val_local)), device=device)]
            )
        )
        return {k: (totals[i] / totals[-1]).item() for i, k in enumerate(keys)}

    train_split = data.manifest["splits"]["train"]
    words_per_token = train_split["words"] / max(train_split["tokens"], 1)

    def seen(step: int) -> dict[str, int]:
        """Training tokens read by ``step`` (repeats counted) and the words they stand for."""
        tokens = step * batch * accum * chunk_tokens
        return {"tokens": tokens, "words": round(tokens * words_per_token)}

    def model_info(scores: dict[str, float] | None) -> dict[str, Any]:
        """The ``tinyminds.json`` of a model folder exported now."""
        return {
            "tinyminds_version": __version__,
            "recipe": config.recipe,
            "model": config.model,
            "parameters": parameters,
            "epoch": state.step / steps_per_epoch,
            "step": state.step,
            "words_seen": seen(state.step)["words"],  # the exported model's exposure
            "validation": scores,
            "data": str(data.folder.resolve()),
            "tokenizer_hash": data.tokenizer_hash,
            "train_text_hash": data.manifest["splits"]["train"]["text_hash"],
        }

    # Milestones still ahead (a resumed run saved the earlier ones before its checkpoint).
    pending_milestones = [
        words
        for words in milestone_words(config.milestones, config.milestone_words)
        if words > seen(state.step)["words"]
    ]

    def save_reached_milestones() -> None:
        """Export the model under the name of every milestone its words seen have now reached."""
        reached = []
        while pending_milestones and seen(state.step)["words"] >= pending_milestones[0]:
            reached.append(pending_milestones.pop(0))
        if not reached:
            return
        check_finite()  # never save a diverged model
        if context.is_main:
            for words in reached:
                export_model(
                    model,
                    data,
                    run_dir / MILESTONES_FOLDER / milestone_name(words),
                    {**model_info(None), "milestone_words": words},
                    masked_lm=bool(masked_lm_extra(config)),
                )
        context.barrier()

    def log_validation() -> dict[str, Any]:
        """Validate, write the ``val`` record (with the tokens and words seen) and return it."""
        scores = validate()
        completed = state.step / steps_per_epoch
        record = {
            "kind": "val",
            "step": state.step,
            "epoch": round(completed, 4),
            **seen(state.step),
            **scores,
        }
        record["perplexity"] = math.exp(min(scores["ce"], 50.0))
        metrics.write(record)
        others = "".join(f", {k} {v:.4f}" for k, v in scores.items() if k != "ce")
        info(
            f"epoch {completed:.2f}: validation CE {scores['ce']:.4f} "
            f"(perplexity {record['perplexity']:.1f}{others})"
        )
        return record

    def save_checkpoint() -> None:
        staging = checkpoint.staging_folder(checkpoints, state.step)
        if context.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        context.barrier()
        checkpoint.write_rank_part(staging, context.rank)
        context.barrier()
        failure = None
        if context.is_main:
            saved_state = {
                "model": model.state_dict(),
                "objective": (objective.state_dict() if hasattr(objective, "state_dict") else None),
                "side": side.side_state() if side is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "loop": state.__dict__,
                "config": to_dict(config),
                # The log window in progress (the steps since the last train record): a resumed
                # run finishes the same window, so its records equal the uninterrupted run's.
                "window": {key: value.item() for key, value in window.items()},
                "window_steps": window_steps,
            }
            try:
                checkpoint.publish(checkpoints, state.step, saved_state, config.keep_checkpoints)
            except UserError as error:
                failure = error
        failed = context.sum(torch.tensor(float(failure is not None), device=device)).item()
        if failure is not None:
            raise failure
        if failed:
            raise UserError("the main process could not write a checkpoint (see its message)")

    def micro_indices(order: np.ndarray, step_in_epoch: int, micro: int) -> np.ndarray:
        """This process's chunks of micro-batch ``micro`` of the epoch's step ``step_in_epoch``."""
        first = (step_in_epoch * accum + micro) * batch + context.rank * local_batch
        return order[first : first + local_batch]

    def run_side_steps(order: np.ndarray, step_in_epoch: int) -> None:
        """The objective's own optimizer steps due before this step (MATE-KD's generator).

        Side step j reads the micro-batches of the epoch's step ``step_in_epoch + j`` (wrapping
        round to the epoch's start): the chunks the student reads next. So side steps take no data
        of their own, and the step counter, epochs, schedule and ``max_steps`` count the student's
        steps only. They run on the unwrapped model: no DDP hooks fire, as only the objective's
        own parameters get gradients. Being a function of the step, they repeat on resume.
        """
        assert side is not None
        for j in range(side.side_steps_before(state.step)):
            ahead = (step_in_epoch + j) % steps_per_epoch
            batches = [
                to_batch(micro_indices(order, ahead, micro), train_chunks, "train")
                for micro in range(accum)
            ]
            values = side.side_step(model, batches)
            # Labelled with the step they precede, so a resume (which truncates the log after the
            # checkpoint's step) drops them with that step and writes them again.
            metrics.write({"kind": side.side_name, "step": state.step + 1, **values})

    # --- the loop ---------------------------------------------------------------------------------
    model.train()
    bar = progress(total_steps, "train", unit="step")
    bar.update(state.step)
    window: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    for key, value in restored_window.items():
        window[key] = torch.tensor(value, dtype=torch.float32, device=device)
    window_steps, window_start = restored_window_steps, time.perf_counter()
    timed_steps = 0  # the window's steps run by this process (its speed; a resume starts at 0)
    tokens_per_step = batch * accum * chunk_tokens
    train_seconds, trained_steps = 0.0, 0
    first_bad = torch.zeros((), dtype=torch.long, device=device)  # step of a non-finite loss
    bad_loss = torch.zeros((), device=device)

    def check_finite() -> None:
        """Stop, naming the step and batch, when any process has seen a non-finite loss."""
        if context.sum((first_bad > 0).float()).item() == 0:  # every process takes part
            return
        step = int(first_bad.item())
        if step == 0:
            where = "on another process"
        else:
            epoch_of_step = (step - 1) // steps_per_epoch
            where = (
                f"at step {step} (epoch {epoch_of_step + 1}, batch "
                f"{step - epoch_of_step * steps_per_epoch} of the epoch)"
            )
        raise TrainingDiverged(
            f"loss is {bad_loss.item() if step else 'not finite'} {where}; the last good "
            f"checkpoint in {checkpoints} is kept"
        )

    while state.step < total_steps:
        epoch = state.step // steps_per_epoch
        order = epoch_permutation(len(train_chunks), config.seed, epoch)
        epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
        while state.step < epoch_end:
            step_started = time.perf_counter()
            step_in_epoch = state.step - epoch * steps_per_epoch
            if side is not None:
                run_side_steps(order, step_in_epoch)
            step_loss = torch.zeros((), device=device)
            for micro in range(accum):
                indices = micro_indices(order, step_in_epoch, micro)
                sync = micro == accum - 1 or not context.enabled
                with nullcontext() if sync else forward_model.no_sync(), autocast():
                    output = objective(forward_model, to_batch(indices, train_chunks, "train"))
                scaler.scale(output.loss / accum).backward()
                step_loss += output.loss.detach() / accum
                for key, value in output.metrics.items():
                    window[key] += value / accum
            if context.enabled:  # DDP averages the model's gradients; an objective's, here
                for param in objective_params:
                    if param.grad is not None:
                        param.grad.copy_(context.mean(param.grad))
            scaler.unscale_(optimizer)
            grad_norm = (
                nn.utils.clip_grad_norm_(trainable_params, config.grad_clip)
                if config.grad_clip > 0
                else torch.zeros((), device=device)
            )
            # Remembered on the device, checked before anything is logged or saved: a per-step
            # .item() would make the CPU wait for the GPU at every step.
            diverged = (first_bad == 0) & ~torch.isfinite(step_loss)
            first_bad = torch.where(diverged, state.step + 1, first_bad)
            bad_loss = torch.where(diverged, step_loss, bad_loss)
            lr = scheduler.get_last_lr()[0]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window["loss"] += step_loss
            window["grad_norm"] += grad_norm.detach().float().to(device)
            window_steps += 1
            timed_steps += 1
            state.step += 1
            trained_steps += 1
            train_seconds += time.perf_counter() - step_started
            bar.update(1)

            if state.step % config.log_every == 0 or state.step == epoch_end:
                check_finite()
                keys = sorted(window)
                means = context.mean(torch.stack([window[k] for k in keys])) / window_steps
                elapsed = time.perf_counter() - window_start
                record = {
                    "kind": "train",
                    "step": state.step,
                    "epoch": round(state.step / steps_per_epoch, 4),
                    **{k: means[i].item() for i, k in enumerate(keys)},
                    "lr": lr,
                    "tokens_per_s": round(timed_steps * tokens_per_step / max(elapsed, 1e-9), 1),
                }
                metrics.write(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}"
                )
                window.clear()
                window_steps, timed_steps, window_start = 0, 0, time.perf_counter()
            if pending_milestones:
                paused = time.perf_counter()
                save_reached_milestones()
                window_start += time.perf_counter() - paused  # not training time
            at_boundary = state.step == epoch_end
            if config.eval_every and state.step % config.eval_every == 0 and not at_boundary:
                # Before the step's checkpoint: a run resumed from that checkpoint keeps this
                # record (the log is truncated after the checkpoint's step) and does not redo it.
                check_finite()
                paused = time.perf_counter()
                log_validation()
                window_start += time.perf_counter() - paused  # not training time
            if (
                config.checkpoint_every
                and state.step % config.checkpoint_every == 0
                and not at_boundary
            ):
                check_finite()
                paused = time.perf_counter()
                save_checkpoint()
                window_start += time.perf_counter() - paused  # not training time

        # --- end of an epoch (or of max_steps): validate, keep the best, checkpoint -------------
        check_finite()
        paused = time.perf_counter()
        record = log_validation()
        scores = {k: v for k, v in record.items() if k not in VALIDATION_EXTRAS}
        state.validation.append(record)
        state.validated_epochs += 1
        if scores["ce"] < state.best_ce:
            state.best_ce, state.best_epoch = scores["ce"], len(state.validation)
            if context.is_main:
                export_model(
                    model,
                    data,
                    run_dir / "model",
                    model_info(scores),
                    masked_lm=bool(masked_lm_extra(config)),
                )
        save_checkpoint()
        context.barrier()
        window_start += time.perf_counter() - paused  # validation and export are not training
    bar.close()
    metrics.close()

    result = TrainResult(
        run_dir=run_dir,
        model_dir=run_dir / "model",
        best_epoch=state.best_epoch,
        best_val_ce=state.best_ce,
        validation=state.validation,
        parameters=parameters,
        steps=state.step,
        seconds=time.perf_counter() - started,
        tokens_per_second=trained_steps * tokens_per_step / train_seconds if train_seconds else 0.0,
        setup_seconds=setup_seconds,
        words_seen=seen(state.step)["words"],
        milestones=[m.name for m in saved_milestones(run_dir)],
    )
    if context.is_main:
        write_json_atomic(run_dir / "summary.json", result.__dict__)
    return result


def config_from_run(run_dir: Path) -> TrainConfig:
    """The resolved config saved in a run folder."""
    path = run_dir / "config.yaml"
    return from_dict(TrainConfig, yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
