"""Multi-teacher knowledge distillation as an objective of the one training engine (SPEC §3).

The student's loss is ``alpha * CE + (1 - alpha) * T^2 * KL(teachers || student)`` with the
teachers' logits averaged before the softmax (BabyLlama), and with the KL summed over the 128
positions of a chunk and averaged over chunks (``kl_reduction: sequence``, BabyLlama's batchmean)
or averaged per token. The teachers' ensemble distribution comes either from running the teachers
(online) or from the teacher-logit cache: top-k tokens per position plus one bucket for the rest
of the mass, computed once over the fixed training chunks and read every epoch. Validation always
runs the teachers online on the dev chunks (they are not cached) and reports CE and KL; the engine
keeps the epoch with the best CE.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig

from tinyminds.console import info
from tinyminds.data.chunks import load_prepared
from tinyminds.errors import UserError
from tinyminds.files import write_json_atomic
from tinyminds.models.zoo import get_spec
from tinyminds.training.config import DistillConfig
from tinyminds.training.engine import TrainResult, train
from tinyminds.training.exposure import describe as describe_exposure
from tinyminds.training.exposure import exposure_record, model_words
from tinyminds.training.objectives.base import (
    Batch,
    Objective,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
    next_token_labels,
)
from tinyminds.training.objectives.divergences import (
    DivergenceSpec,
    TaidSchedule,
    bucket_log_probs,
    cache_refusal,
    divergence,
    sampled_divergence,
)
from tinyminds.training.objectives.kd_losses import (
    cached_kd_loss,
    chunked_dense_kl,
    chunked_ensemble_kl,
    chunked_hybrid_kl,
    chunked_sparse_kl,
    dense_kl,
    ensemble_log_probs,
    kd_loss,
    mean_pool,
    reduce_kl,
    sparse_kl,
)
from tinyminds.training.teacher_cache import (
    RepresentationSpec,
    TeacherCache,
    cache_key,
    model_fingerprint,
    open_or_build_cache,
)
from tinyminds.training.teachers import load_teachers

CHUNK_ROWS = {"cpu": 256, "cuda": 4096}
"""Positions per chunk of the closed-form KLs, by device. On a CPU a chunk's few passes over its
rows x V floats run from the cache when the chunk is small: 256 rows took the dense KL from 643
to 432 ms and the sampled-cache KL from 381 to 156 ms at V = 8,000, 4,096 positions (one thread,
benchmarks/bench_cached_objectives.py's machine); a GPU wants large chunks (fewer launches)."""


def teacher_representations(kind: str, outputs: list[Any]) -> list[torch.Tensor]:
    """Each teacher's ``[B, width]`` sequence representation, float32: its last hidden states
    mean-pooled over the chunk (``hidden``) or its logits averaged over the chunk (``logits``).
    The one definition the contrastive term uses online and the cache build stores."""
    if kind == "logits":
        return [mean_pool(output.logits) for output in outputs]
    return [mean_pool(output.hidden_states[-1]) for output in outputs]


class DistillationObjective:
    """CE + T^2-scaled KL to the teachers' ensemble, online or from the teacher cache."""

    def __init__(
        self, teachers: list[nn.Module], teacher_dirs: list[str], config: DistillConfig
    ) -> None:
        self.teachers = teachers
        self.teacher_dirs = teacher_dirs
        self.config = config
        self.cache: TeacherCache | None = None
        self.amp_dtype: torch.dtype | None = None
        self.divergence = DivergenceSpec(
            divergence_name(config),  # type: ignore[arg-type]
            skew_alpha=config.skew_alpha,
            jsd_beta=config.jsd_beta,
        )
        self.taid = (
            TaidSchedule(
                config.taid_t_start, config.taid_t_end, config.taid_momentum, config.taid_step
            )
            if self.divergence.name == "taid"
            else None
        )
        self.training_calls = 0
        """Training forward passes so far (micro-batches): TAID's progress through the run."""
        self.total_calls = 0
        self.mean: Any = torch.clone
        self.chunk_rows = CHUNK_ROWS["cuda"]
        """Positions per chunk of the closed-form KLs (`setup` picks it by device)."""
        self.representation: RepresentationSpec | None = None
        """Set by an objective that also needs per-chunk teacher representations from the cache
        (contrastive): the cache then stores them, computed in the same teacher pass."""

    def setup(self, context: SetupContext) -> None:
        """Teachers to the device (in the run's half precision on a GPU: they are never trained),
        then open or build the teacher cache."""
        self.amp_dtype = context.amp_dtype
        self.total_calls = context.total_steps * context.grad_accum
        self.mean = context.mean
        self.chunk_rows = CHUNK_ROWS.get(context.device.type, CHUNK_ROWS["cuda"])
        teacher_dtype = context.amp_dtype if context.device.type == "cuda" else None
        for teacher in self.teachers:
            teacher.to(device=context.device, dtype=teacher_dtype)
        if not self.config.teacher_cache:
            return
        data = context.data
        representation = self.representation
        key = self.cache_key(data)
        folder = (
            Path(self.config.cache_dir)
            if self.config.cache_dir
            else data.folder / "teacher-cache" / key[:16]
        )
        self.cache = open_or_build_cache(
            folder,
            key,
            chunks=data.chunks("train"),
            ensemble_log_probs=(
                self.ensemble_log_probs if representation is None else self.teacher_pass
            ),
            k=self.config.cache_k,
            vocab_size=data.vocab_size,
            batch_size=self.config.cache_batch_size,
            device=context.device,
            rank=context.rank,
            world_size=context.world_size,
            barrier=context.barrier,
            selection=self.config.cache_selection,
            rows=context.train_rows,
            representations=representation,
        )
        info(f"teacher cache: {folder} ({self.cache.bytes_per_token:.0f} bytes per token)")

    def cache_key(self, data: Any) -> str:
        """The key of the teacher cache this objective reads for ``data`` (a `PreparedData`): the
        teachers' weights, the tokenizer, the training chunks, k, T, the ensemble and the
        selection, and the representations stored beside when another objective asks for them."""
        mode = f"{self.config.ensemble}/{self.config.cache_selection}"
        if self.representation is not None:
            mode += f"/representation={self.representation.kind}"
        return cache_key(
            teacher_fingerprints=[model_fingerprint(Path(d)) for d in self.teacher_dirs],
            tokenizer_hash=data.tokenizer_hash,
            data_hash=data.manifest["splits"]["train"]["file_sha256"],
            k=self.config.cache_k,
            temperature=self.config.temperature,
            weights=self.normalised_weights(),
            mode=mode,
        )

    def normalised_weights(self) -> list[float]:
        """Each teacher's share of the ensemble (equal when no weights are given), summing to 1."""
        weights = self.config.teacher_weights or [1.0] * len(self.teachers)
        return [w / sum(weights) for w in weights]

    def run_teachers(self, input_ids: torch.Tensor, hidden_states: bool = False) -> list[Any]:
        """Each teacher's forward pass (no gradient, the run's autocast): outputs with ``.logits``
        and, when ``hidden_states``, ``.hidden_states``."""
        autocast = (
            torch.autocast(input_ids.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with torch.no_grad(), autocast:
            return [
                teacher(input_ids=input_ids, output_hidden_states=hidden_states)
                for teacher in self.teachers
            ]

    def ensemble_of(self, teacher_logits: list[torch.Tensor]) -> torch.Tensor:
        """The teachers' ensemble log-probabilities at temperature T, ``[B, L, V]`` float32."""
        with torch.no_grad():
            return ensemble_log_probs(
                teacher_logits,
                self.config.temperature,
                self.config.teacher_weights or None,
                self.config.ensemble,
            )

    def ensemble_log_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The teachers' ensemble log-probabilities for ``input_ids`` (runs the teachers)."""
        return self.ensemble_of([output.logits for output in self.run_teachers(input_ids)])

    def teacher_pass(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the ensemble's log-probabilities, each teacher's representation): one teacher pass
        that fills a cache with representations."""
        assert self.representation is not None
        kind = self.representation.kind
        outputs = self.run_teachers(input_ids, hidden_states=kind == "hidden")
        log_probs = self.ensemble_of([output.logits for output in outputs])
        return log_probs, teacher_representations(kind, outputs)

    def cached_divergence(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-position divergence ``[B, L]`` of the student's ``logits`` from the cached
        ensemble of ``batch``'s training chunks (every divergence the cache serves;
        `check_distill_config` refused the others)."""
        assert self.cache is not None
        config, name = self.config, self.divergence.name
        ids, log_probs, rest = self.cache.lookup(batch.chunk_index, logits.device)
        if name not in ("forward_kl", "reverse_kl"):
            temperature = config.temperature
            if config.cache_selection == "sample":
                student = torch.log_softmax(logits.float() / temperature, dim=-1)
                return sampled_divergence(log_probs, student.gather(-1, ids), self.divergence)
            # the top-k cache's k + 1 buckets
            buckets = bucket_log_probs(ids, log_probs, rest, logits, temperature)
            taid_t = self.taid.t if self.taid is not None else None
            return divergence(*buckets, self.divergence, taid_t)
        if name == "forward_kl":
            # Closed-form gradient, one pass over the logits: 6x faster than autograd on a CPU.
            estimator = self.cached_estimator(ids)
            if "n_tail" in estimator:
                return chunked_hybrid_kl(
                    ids, log_probs, rest, logits, config.temperature, estimator["n_tail"],
                    chunk_rows=self.chunk_rows,
                )  # fmt: skip
            return chunked_sparse_kl(
                ids, log_probs, rest, logits, config.temperature, tail=estimator["tail"],
                chunk_rows=self.chunk_rows,
            )  # fmt: skip
        return sparse_kl(ids, log_probs, rest, logits, config.temperature, "reverse")

    def cached_estimator(self, ids: torch.Tensor) -> dict[str, Any]:
        """How the forward KL reads this run's cache: the sampled one as the hybrid estimate with
        no head (each of the k draws stands for 1/k of the mass; the cache's rest is log 1 = 0),
        the hybrid one with its k // 2 draws, the top-k one with its tail."""
        selection = self.config.cache_selection
        if selection == "sample":
            return {"n_tail": ids.shape[-1]}
        if selection == "hybrid":
            return {"n_tail": self.config.cache_k // 2}
        return {"tail": self.config.cache_tail}

    def fused_cached_loss(
        self, logits: torch.Tensor, batch: Batch, ce_weight: float, kd_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(``ce_weight * CE + kd_weight * T^2 * KL``, CE, KL) in one pass over ``logits``
        (`kd_losses.cached_kd_loss`) where the KL is the forward KL read from the cache while
        training; None elsewhere, where the caller computes the two terms apart."""
        if self.cache is None or batch.split != "train" or self.divergence.name != "forward_kl":
            return None
        if not torch.is_grad_enabled():
            return None
        config = self.config
        ids, log_probs, rest = self.cache.lookup(batch.chunk_index, logits.device)
        return cached_kd_loss(
            ids, log_probs, rest, logits, next_token_labels(batch.input_ids), config.temperature,
            ce_weight=ce_weight, kl_weight=kd_weight * config.temperature**2,
            reduction=config.kl_reduction, chunk_rows=self.chunk_rows,
            **self.cached_estimator(ids),
        )  # fmt: skip

    def teacher_divergence(
        self, teacher_logits: list[torch.Tensor], student_logits: torch.Tensor
    ) -> torch.Tensor:
        """Per-position divergence ``[B, L]`` against the teachers' raw logits (run online).

        While training with the forward KL and BabyLlama's logit average, the ensemble is mixed
        chunk by chunk inside the KL (`kd_losses.chunked_ensemble_kl`: its log-probabilities are
        never formed); otherwise the ensemble, then `online_divergence`."""
        config = self.config
        if (
            self.divergence.name == "forward_kl"
            and config.ensemble == "logits"
            and torch.is_grad_enabled()
        ):
            return chunked_ensemble_kl(
                teacher_logits,
                student_logits,
                config.temperature,
                config.teacher_weights or None,
                self.chunk_rows,
            )
        return self.online_divergence(self.ensemble_of(teacher_logits), student_logits)

    def online_divergence(
        self,
        teacher_log_probs: torch.Tensor,
        student_logits: torch.Tensor,
        teacher_grad: bool = False,
    ) -> torch.Tensor:
        """Per-position divergence ``[B, L]`` against teachers run online (the contrastive and
        MATE-KD objectives use it too). The two KLs take the closed-form chunked path while
        training, unless the gradient must also reach the teachers' side (``teacher_grad``:
        MATE-KD's generator); the other divergences are plain autograd."""
        temperature, name = self.config.temperature, self.divergence.name
        if name in ("forward_kl", "reverse_kl"):
            direction = "forward" if name == "forward_kl" else "reverse"
            if torch.is_grad_enabled() and not teacher_grad:
                return chunked_dense_kl(
                    teacher_log_probs, student_logits, temperature, direction, self.chunk_rows
                )
            return dense_kl(teacher_log_probs, student_logits, temperature, direction)
        student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
        taid_t = self.taid.t if self.taid is not None else None
        return divergence(teacher_log_probs, student, self.divergence, taid_t)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the objective: TAID's schedule (nothing otherwise)."""
        if self.taid is None:
            return {}
        return {"taid": self.taid.state_dict(), "training_calls": self.training_calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.taid is not None and state:
            self.taid.load_state_dict(state["taid"])
            self.training_calls = int(state["training_calls"])

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        config = self.config
        logits = model(input_ids=batch.input_ids).logits
        fused = self.fused_cached_loss(logits, batch, config.alpha, 1.0 - config.alpha)
        if fused is not None:  # the same value as kd_loss(ce, kl, alpha, T), in one pass
            loss, ce, kl = fused
            return ObjectiveOutput(loss=loss, metrics={"ce": ce, "kl": kl})
        ce = causal_lm_cross_entropy(logits, batch.input_ids)
        if self.divergence.name not in ("forward_kl", "reverse_kl"):
            return self._other_divergence(logits, ce, batch)
        if self.cache is not None and batch.split == "train":
            per_position = self.cached_divergence(logits, batch)
        else:
            teachers = [output.logits for output in self.run_teachers(batch.input_ids)]
            per_position = self.teacher_divergence(teachers, logits)
        kl = reduce_kl(per_position, config.kl_reduction)
        loss = kd_loss(ce, kl, config.alpha, config.temperature)
        return ObjectiveOutput(loss=loss, metrics={"ce": ce.detach(), "kl": kl.detach()})

    def _other_divergence(
        self, logits: torch.Tensor, ce: torch.Tensor, batch: Batch
    ) -> ObjectiveOutput:
        """The KD term with a divergence other than the KLs (plain autograd; `divergences`).

        Metrics: ``div``, the divergence trained; on dev also ``kl``, the forward KL, which every
        run reports alike; with TAID its ``taid_t``."""
        config, spec, temperature = self.config, self.divergence, self.config.temperature
        taid_t = self.taid.t if self.taid is not None else None
        metrics: dict[str, torch.Tensor] = {"ce": ce.detach()}
        if self.cache is not None and batch.split == "train":
            per_position = self.cached_divergence(logits, batch)
        else:
            teacher = self.ensemble_log_probs(batch.input_ids)
            student = torch.log_softmax(logits.float() / temperature, dim=-1)
            per_position = divergence(teacher, student, spec, taid_t)
            if not torch.is_grad_enabled():
                forward = divergence(teacher, student, DivergenceSpec("forward_kl"))
                metrics["kl"] = reduce_kl(forward, config.kl_reduction)
        value = reduce_kl(per_position, config.kl_reduction)
        metrics["div"] = value.detach()
        if self.taid is not None:
            metrics["taid_t"] = torch.tensor(self.taid.t, device=logits.device)
            if torch.is_grad_enabled() and batch.split == "train":
                # t moves after the step that used it, on the loss of every process alike.
                self.training_calls += 1
                progress = self.training_calls / max(self.total_calls, 1)
                self.taid.update(float(self.mean(value.detach()).item()), progress)
        loss = kd_loss(ce, value, config.alpha, temperature)
        return ObjectiveOutput(loss=loss, metrics=metrics)


def divergence_name(config: DistillConfig) -> str:
    """The divergence a config trains with: ``divergence``, or reverse_kl where the older key
    ``kl_direction=reverse`` says so (refused beside any other divergence)."""
    if config.kl_direction == "reverse":
        if config.divergence not in ("forward_kl", "reverse_kl"):
            raise UserError(
                f"kl_direction=reverse is the older spelling of divergence=reverse_kl; it cannot "
                f"be combined with divergence={config.divergence} (drop kl_direction)"
            )
        return "reverse_kl"
    return config.divergence


def check_distill_config(config: DistillConfig) -> None:
    """Refuse settings that cannot work before anything is loaded."""
    if not 0.0 <= config.alpha <= 1.0:
        raise UserError(f"alpha must be between 0 and 1, got {config.alpha}")
    if config.temperature <= 0:
        raise UserError(f"temperature must be positive, got {config.temperature}")
    if config.teacher_weights:
        if len(config.teacher_weights) != len(config.teachers):
            raise UserError(
                f"teacher_weights has {len(config.teacher_weights)} values for "
                f"{len(config.teachers)} teachers"
            )
        if any(w < 0 for w in config.teacher_weights) or not any(config.teacher_weights):
            raise UserError(
                f"teacher_weights must be non-negative and not all zero: {config.teacher_weights}"
            )
    name = divergence_name(config)
    if config.divergence == "taid" and config.objective != "kd":
        raise UserError(
            f"divergence=taid is available with objective=kd (its t is the KD objective's state), "
            f"not objective={config.objective}"
        )
    if config.divergence == "taid" and config.taid_t_start >= config.taid_t_end:
        raise UserError(
            f"taid_t_start ({config.taid_t_start}) must be below taid_t_end ({config.taid_t_end})"
        )
    if config.teacher_cache and name not in ("forward_kl", "reverse_kl"):
        refusal = cache_refusal(name, config.cache_selection, config.cache_tail)
        if refusal:
            raise UserError(refusal)
    spelling = (
        "kl_direction=reverse" if config.kl_direction == "reverse" else "divergence=reverse_kl"
    )
    if (
        config.teacher_cache
        and config.cache_selection in ("sample", "hybrid")
        and name == "reverse_kl"
    ):
        raise UserError(
            f"{spelling} cannot be estimated from sampled teacher tokens "
            f"(cache_selection={config.cache_selection}); use cache_selection=topk or "
            "teacher_cache=false"
        )
    if config.teacher_cache and config.cache_tail == "uniform" and config.cache_selection != "topk":
        raise UserError(
            f"cache_tail=uniform applies to cache_selection=topk, not {config.cache_selection}"
        )
    if config.teacher_cache and config.cache_tail == "uniform" and name == "reverse_kl":
        raise UserError(
            "cache_tail=uniform is defined for the forward KL only; use cache_tail=bucket with "
            f"{spelling}"
        )
    if config.cache_k < 1:
        raise UserError(f"cache_k must be at least 1, got {config.cache_k}")
    if not get_spec(config.model).is_causal_lm:
        raise UserError(
            f"the student {config.model} is a masked LM; distillation trains causal LMs"
        )
    if config.objective == "contrastive":
        check_contrastive_config(config)
    if config.objective == "mate":
        check_mate_config(config)


def _check_loss_weights(objective: str, weights: dict[str, float]) -> None:
    """An objective's relative loss weights: none negative (or NaN), not all zero."""
    negative = [f"{k}={v}" for k, v in weights.items() if not v >= 0]
    if negative:
        raise UserError(
            f"objective={objective}: weights must not be negative: {', '.join(negative)}"
        )
    if not any(weights.values()):
        *first, last = weights
        raise UserError(f"objective={objective}: {', '.join(first)} and {last} are all zero")


def check_contrastive_config(config: DistillConfig) -> None:
    """objective=contrastive: weights, temperature, batch and the teacher cache."""
    _check_loss_weights(
        "contrastive",
        {
            "ce_weight": config.ce_weight,
            "kd_weight": config.kd_weight,
            "contrastive_weight": config.contrastive_weight,
        },
    )
    if not config.contrastive_temperature > 0:
        raise UserError(
            f"contrastive_temperature must be positive, got {config.contrastive_temperature}"
        )
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    if config.batch_size // world < 2:
        raise UserError(
            f"objective=contrastive needs at least 2 sequences per micro-batch and process (the "
            f"other sequences are the negatives); batch_size={config.batch_size} over {world} "
            f"process(es) gives {config.batch_size // world}"
        )


def check_mate_config(config: DistillConfig) -> None:
    """objective=mate: generator, rounds, masking, weights and the teacher cache."""
    if not config.generator:
        raise UserError(
            "objective=mate needs generator=FOLDER: a masked LM trained on the same data by "
            "`tinyminds train electra-tiny` (or electra-56m), e.g. runs/electra-tiny/model"
        )
    steps = {"generator_steps": config.generator_steps, "student_steps": config.student_steps}
    bad_steps = [f"{k}={v}" for k, v in steps.items() if v < 1]
    if bad_steps:
        raise UserError(
            f"objective=mate: {', '.join(bad_steps)}; generator and student steps per round "
            "must be at least 1"
        )
    if not 0.0 < config.mask_fraction <= 1.0:
        raise UserError(
            f"mask_fraction must lie in (0, 1] (the share of tokens the generator refills), "
            f"got {config.mask_fraction}"
        )
    if not config.gumbel_tau > 0:
        raise UserError(f"gumbel_tau must be positive, got {config.gumbel_tau}")
    if not config.generator_lr >= 0:
        raise UserError(f"generator_lr must not be negative, got {config.generator_lr}")
    if not config.generator_grad_clip >= 0:
        raise UserError(
            f"generator_grad_clip must not be negative (0 turns clipping off), got "
            f"{config.generator_grad_clip}"
        )
    _check_loss_weights(
        "mate",
        {
            "mate_ce_weight": config.mate_ce_weight,
            "mate_kd_weight": config.mate_kd_weight,
            "mate_adv_weight": config.mate_adv_weight,
        },
    )


def student_width(config: DistillConfig) -> int:
    """Hidden width of the student (its zoo entry, or the ``init_from`` folder's config)."""
    if config.init_from:
        try:
            return int(AutoConfig.from_pretrained(config.init_from).hidden_size)
        except (OSError, ValueError) as error:
            raise UserError(f"init_from={config.init_from}: unreadable config ({error})") from None
    return get_spec(config.model).hidden


def distill(config: DistillConfig, *, resume: bool = False) -> TrainResult:
    """Distill ``config.teachers`` into a ``config.model`` student with the training engine."""
    check_distill_config(config)
    if not config.data:
        raise UserError(
            "no data folder: pass data=DATA_DIR (a folder written by tinyminds prepare)"
        )
    data = load_prepared(Path(config.data))
    student = config.init_from or config.model
    teachers = load_teachers(config.teachers, data, student)
    objective: Objective = DistillationObjective(teachers, config.teachers, config)
    if config.objective == "contrastive":
        from tinyminds.training.objectives.contrastive import ContrastiveObjective

        if not config.teacher_cache:
            info("objective=contrastive: the teachers run online at every step")
        objective = ContrastiveObjective(objective, student_width(config), config.seed)
    elif config.objective == "mate":
        from tinyminds.training.objectives.mate import MateObjective, load_generator

        where = (
            "the KD term on the original text from the teacher cache, the teachers online on "
            "the perturbed text"
            if config.teacher_cache
            else "the teachers online"
        )
        info(
            f"objective=mate: {config.generator_steps} generator steps (on the batches of the "
            f"next student steps) before every {config.student_steps} student steps; {where}"
        )
        generator = load_generator(Path(config.generator), data, student)
        objective = MateObjective(objective, generator)
    result = train(config, objective=objective, resume=resume)
    record_exposure(result, config)
    return result


def record_exposure(result: TrainResult, config: DistillConfig) -> None:
    """Add the student's exposure with its teachers' (and generator's) to ``summary.json``."""
    teachers = {path: model_words(Path(path)) for path in config.teachers}
    generator = {config.generator: model_words(Path(config.generator))} if config.generator else {}
    record = exposure_record(result.words_seen, teachers, generator)
    summary_path = result.run_dir / "summary.json"
    # The main process wrote summary.json and adds to it (under torchrun: rank 0 only).
    if int(os.environ.get("RANK", "0")) == 0 and summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        write_json_atomic(summary_path, {**summary, "exposure": record})
        info(describe_exposure(record))
