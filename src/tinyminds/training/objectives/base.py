"""Training objectives: what the engine minimises, plugged into its one training step.

An objective takes the model and a batch of chunks and returns a loss plus named metrics. The
engine owns everything else (batching, precision, accumulation, clipping, schedule, checkpoints,
validation), so distillation and its variants are new objectives, not new loops. Validation calls
the same objective without gradients and averages its metrics; checkpoints are selected on the
metric called ``ce`` (the student's own cross-entropy), never on a combined loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    """A micro-batch of chunks as the engine hands it to an objective."""

    input_ids: torch.Tensor
    """``[batch, chunk_size]`` token ids on the training device."""
    chunk_index: torch.Tensor
    """Index of each chunk in its split (what a teacher-logit cache is keyed by)."""
    split: str
    """``train`` or ``dev``."""


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """The scalar the engine back-propagates."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars to log (and average over validation), e.g. ``ce`` and ``kl``."""


@dataclass
class SetupContext:
    """What the engine knows once its device and processes are ready, handed to `setup`."""

    device: torch.device
    amp_dtype: torch.dtype | None
    """The autocast dtype of the run (None: fp32)."""
    rank: int
    world_size: int
    barrier: Callable[[], None]
    """Waits for every process (a no-op alone)."""
    data: Any
    """The run's `tinyminds.data.chunks.PreparedData`."""
    run_dir: Path
    train_rows: Any
    """Sorted indices (numpy int64) of every training chunk the whole run reads, all processes and
    epochs together (`tinyminds.data.chunks.chunks_read`): what a teacher cache must hold."""
    total_steps: int = 0
    """The run's optimizer steps (0 where unknown)."""
    grad_accum: int = 1
    """Micro-batches (objective calls) per optimizer step."""
    mean: Callable[[torch.Tensor], torch.Tensor] = torch.clone
    """Averages a tensor over the processes (a copy alone): how an objective that steps its own
    optimizer (`SideSteps`) averages its gradients under torch.distributed."""


class Objective(Protocol):
    """``objective(model, batch)`` returns the loss; an objective may also define
    ``setup(context: SetupContext)``, which the engine calls once before training (to move teachers to
    the device, or build a teacher cache with every process's help). An objective that is an
    ``nn.Module`` has its parameters trained and its state checkpointed with the model's.
    """

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput: ...


@runtime_checkable
class SideSteps(Protocol):
    """An objective that also trains a model of its own in optimizer steps between the student's
    (MATE-KD's generator). The engine calls `side_steps_before` before each of its own optimizer
    steps and runs that many `side_step` calls first. Those steps read the micro-batches of the
    engine's next steps in the epoch (the same chunks the student reads next), so they consume no
    data of their own and do not advance the step counter, the epochs or ``max_steps``. The
    objective owns the side model's optimizer (never the engine's), averages its gradients over
    processes (`SetupContext.mean`), and hands its state to every checkpoint (`side_state`).
    """

    side_name: str
    """The ``kind`` of the metrics records written for side steps (e.g. ``generator``)."""

    def side_steps_before(self, step: int) -> int:
        """How many side steps to run before the engine's optimizer step number ``step + 1``."""
        ...

    def side_step(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """One side optimizer step over ``batches`` (the micro-batches of one engine step); returns
        metrics already averaged over processes. ``model`` is the student, unwrapped (no DDP)."""
        ...

    def side_state(self) -> dict[str, Any]:
        """Everything a resumed run needs (weights, optimizer), saved in each checkpoint."""
        ...

    def load_side_state(self, state: dict[str, Any]) -> None: ...


def next_token_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """Targets for each position: the next token, and -100 (ignored) after the last one."""
    labels = input_ids.new_full(input_ids.shape, -100)
    labels[:, :-1] = input_ids[:, 1:]
    return labels


def causal_lm_cross_entropy(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits`` for ``input_ids``, computed in float32.

    The labels are shifted instead of the logits: slicing ``logits[:, :-1]`` would copy the
    largest tensor of the step forward and zero-fill one of its size backward (a third of a tiny
    model's step time on the CPU).
    """
    flat = logits.reshape(-1, logits.size(-1))
    if flat.dtype != torch.float32:
        flat = flat.float()
    return F.cross_entropy(flat, next_token_labels(input_ids).reshape(-1), ignore_index=-100)


class CausalLMObjective:
    """Plain language modelling: next-token cross-entropy (what the teachers are trained with)."""

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        logits = model(input_ids=batch.input_ids).logits
        ce = causal_lm_cross_entropy(logits, batch.input_ids)
        return ObjectiveOutput(loss=ce, metrics={"ce": ce.detach()})
