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

The teacher-logit cache holds top-k log-probabilities, from which neither representation can be
recovered, so this objective runs the teachers online (``teacher_cache=false``, enforced by
`check_distill_config`). The negatives are the other sequences of the same micro-batch on the same
process: ``N = batch_size / processes`` (32 with the paper's batch on one GPU); under
torch.distributed each process contrasts its own share (the engine averages the projections'
gradients over processes like the student's). Training refuses ``N < 2``.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyminds.training.objectives.base import (
    Batch,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
)
from tinyminds.training.objectives.distillation import DistillationObjective
from tinyminds.training.objectives.kd_losses import (
    info_nce,
    mean_pool,
    reduce_kl,
)


class ContrastiveObjective(nn.Module):
    """CE + KD + N-pair; owns the student-side projections (trained and checkpointed)."""

    def __init__(self, kd: DistillationObjective, student_width: int, seed: int) -> None:
        super().__init__()
        # A plain object, not a submodule: the teachers are never trained nor checkpointed.
        self.kd = kd
        self.config = kd.config
        self.projections = nn.ModuleList()
        if self.config.contrastive_representation == "hidden":
            with torch.random.fork_rng(devices=[]):  # same init for a seed, whatever ran before
                torch.manual_seed(seed)
                for teacher in kd.teachers:
                    width = int(teacher.config.hidden_size)
                    self.projections.append(nn.Linear(student_width, width, bias=False))

    def setup(self, context: SetupContext) -> None:
        self.kd.setup(context)

    def representations(
        self, student_output: object, teacher_outputs: list[object]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(teacher, student) ``[B, D]`` representation pairs in each teacher's space."""
        if self.config.contrastive_representation == "logits":
            student = mean_pool(student_output.logits)  # type: ignore[attr-defined]
            return [(mean_pool(t.logits), student) for t in teacher_outputs]  # type: ignore[attr-defined]
        pooled = mean_pool(student_output.hidden_states[-1])  # type: ignore[attr-defined]
        return [
            (mean_pool(t.hidden_states[-1]), projection(pooled))  # type: ignore[attr-defined]
            for t, projection in zip(teacher_outputs, self.projections, strict=True)
        ]

    def forward(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        config = self.config
        hidden = config.contrastive_representation == "hidden"
        output = model(input_ids=batch.input_ids, output_hidden_states=hidden)
        logits = output.logits
        ce = causal_lm_cross_entropy(logits, batch.input_ids)
        teachers = self.kd.run_teachers(batch.input_ids, hidden_states=hidden)
        teacher_log_probs = self.kd.ensemble_of([t.logits for t in teachers])
        kl = reduce_kl(self.kd.online_divergence(teacher_log_probs, logits), config.kl_reduction)
        if batch.input_ids.shape[0] >= 2:
            contrastive = sum(
                weight
                * info_nce(
                    t.detach(), s, config.contrastive_temperature, config.contrastive_similarity
                )
                for weight, (t, s) in zip(
                    self.kd.normalised_weights(),
                    self.representations(output, teachers),
                    strict=True,
                )
                if weight > 0
            )
        else:  # a last validation batch of one chunk has no negative (training refuses N < 2)
            contrastive = ce.new_zeros(())
        loss = (
            config.ce_weight * ce
            + config.kd_weight * config.temperature**2 * kl
            + config.contrastive_weight * contrastive
        )
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "ce": ce.detach(),
                "kl": kl.detach(),
                "contrastive": torch.as_tensor(contrastive).detach(),
            },
        )
