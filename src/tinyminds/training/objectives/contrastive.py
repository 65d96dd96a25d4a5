"""Contrastive distillation (ContrastiveLlama-58M, SPEC §3, paper §4.3) as an objective of the engine.

``L = ce_weight * CE + kd_weight * T^2 * KL + contrastive_weight * N-pair``: the first two terms
are the KD objective's (`DistillationObjective`, whose teachers, ensemble and KL this reuses), the
third is InfoNCE with in-batch negatives (`kd_losses.info_nce`) between each teacher's and the
student's sequence representations, averaged over the teachers with the ensemble's weights.

Representations (``contrastive_representation``):

- ``hidden`` (the paper's text): the last hidden states mean-pooled over the chunk. Teachers and
  student have different widths, so the student's representation is mapped to each teacher's
  width by a learned linear projection (one per teacher, no bias). The projections belong to this
  objective, an ``nn.Module``: the engine trains them with the student's optimizer and keeps them in
  its checkpoints; the exported student does not contain them.
- ``logits`` (the authors' code): the logits averaged over the chunk, compared as they are.

With the teacher cache (``teacher_cache=true``) the KD term reads the cached ensemble as the kd
objective does, and the teachers' representations of each training chunk, fixed for fixed chunks,
are stored in the same cache (computed in the same teacher pass as the top-k buckets, by the same
`teacher_representations` as the online path): training then runs no teacher at all. Validation
runs them online on the dev chunks. The negatives are the other sequences of the same micro-batch on the same
process: ``N = batch_size / processes`` (32 with the paper's batch on one GPU); under
torch.distributed each process contrasts its own share (the engine averages the projections'
gradients over processes like the student's). Training refuses ``N < 2``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tinyminds.training.objectives.base import (
    Batch,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
)
from tinyminds.training.objectives.distillation import (
    DistillationObjective,
    teacher_representations,
)
from tinyminds.training.objectives.kd_losses import (
    info_nce,
    mean_pool,
    reduce_kl,
)
from tinyminds.training.teacher_cache import RepresentationSpec


class ContrastiveObjective(nn.Module):
    """CE + KD + N-pair; owns the student-side projections (trained and checkpointed)."""

    def __init__(self, kd: DistillationObjective, student_width: int, seed: int) -> None:
        super().__init__()
        # A plain object, not a submodule: the teachers are never trained nor checkpointed.
        self.kd = kd
        self.config = kd.config
        kind = self.config.contrastive_representation
        self.projections = nn.ModuleList()
        size = "hidden_size" if kind == "hidden" else "vocab_size"
        widths = tuple(int(getattr(teacher.config, size)) for teacher in kd.teachers)
        if kind == "hidden":
            with torch.random.fork_rng(devices=[]):  # same init for a seed, whatever ran before
                torch.manual_seed(seed)
                for width in widths:
                    self.projections.append(nn.Linear(student_width, width, bias=False))
        # What the teacher cache stores beside the ensemble when teacher_cache=true.
        kd.representation = RepresentationSpec(kind, widths)

    def setup(self, context: SetupContext) -> None:
        self.kd.setup(context)

    def student_representations(self, student_output: Any) -> list[torch.Tensor]:
        """The student's ``[B, D]`` representation in each teacher's space (projected for
        ``hidden``; the averaged logits as they are for ``logits``)."""
        if self.config.contrastive_representation == "logits":
            return [mean_pool(student_output.logits)] * len(self.kd.teachers)
        pooled = mean_pool(student_output.hidden_states[-1])
        return [projection(pooled) for projection in self.projections]

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        config, kd = self.config, self.kd
        hidden = config.contrastive_representation == "hidden"
        output = model(input_ids=batch.input_ids, output_hidden_states=hidden)
        logits = output.logits
        fused = kd.fused_cached_loss(logits, batch, config.ce_weight, config.kd_weight)
        if fused is not None:  # CE and KD terms in one pass over the logits
            ce_and_kd, ce, kl = fused
            teachers = kd.cache.lookup_representations(batch.chunk_index, logits.device)  # type: ignore[union-attr]
        else:
            ce = causal_lm_cross_entropy(logits, batch.input_ids)
            if kd.cache is not None and batch.split == "train":
                per_position = kd.cached_divergence(logits, batch)
                teachers = kd.cache.lookup_representations(batch.chunk_index, logits.device)
            else:
                outputs = kd.run_teachers(batch.input_ids, hidden_states=hidden)
                per_position = kd.teacher_divergence([t.logits for t in outputs], logits)
                teachers = teacher_representations(config.contrastive_representation, outputs)
            kl = reduce_kl(per_position, config.kl_reduction)
            ce_and_kd = config.ce_weight * ce + config.kd_weight * config.temperature**2 * kl
        if batch.input_ids.shape[0] >= 2:
            contrastive = sum(
                weight
                * info_nce(
                    t.detach(), s, config.contrastive_temperature, config.contrastive_similarity
                )
                for weight, t, s in zip(
                    kd.normalised_weights(),
                    teachers,
                    self.student_representations(output),
                    strict=True,
                )
                if weight > 0
            )
        else:  # a last validation batch of one chunk has no negative (training refuses N < 2)
            contrastive = ce.new_zeros(())
        loss = ce_and_kd + config.contrastive_weight * contrastive
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "ce": ce.detach(),
                "kl": kl.detach(),
                "contrastive": torch.as_tensor(contrastive).detach(),
            },
        )
