"""Masked language modelling (the MATE-KD generator's pretraining, SPEC §3) as an engine objective.

Each position is selected with probability ``mask_prob`` (15% for pretraining, BERT's and
ELECTRA's rate; MATE-KD later masks 30% when it perturbs text). A selected token becomes
``[MASK]`` 80% of the time, a random token of the shared vocabulary 10% and stays itself 10%
(BERT); the loss is the cross-entropy of the original token at the selected positions only.

Masks of training chunks are drawn from the CPU random generator, whose state the engine saves in
every checkpoint (a resumed run draws the same masks). Masks of dev chunks are a function of the
chunk's index and a fixed seed, so that every epoch's validation CE and accuracy are measured on
the same masked positions. The metrics are ``ce`` (masked-token cross-entropy: the engine keeps the
epoch where it is lowest) and ``accuracy`` (argmax = original token, at the selected positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyminds.devices import to_device
from tinyminds.training.objectives.base import Batch, ObjectiveOutput

DEV_MASK_SEED = 20_240_515


def mask_tokens(
    input_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels): BERT's 80/10/10 corruption of ``mask_prob`` of the positions.

    ``labels`` holds the original id at selected positions and -100 elsewhere; at least one
    position per row is selected. Random draws happen on the CPU (``generator`` or the global CPU
    generator) and are moved to ``input_ids``'s device.
    """
    shape = input_ids.shape
    selected = torch.rand(shape, generator=generator) < mask_prob
    none = ~selected.any(dim=1)
    if none.any():  # a row with nothing to predict would make its loss undefined
        selected[none, torch.randint(shape[1], (int(none.sum()),), generator=generator)] = True
    action = torch.rand(shape, generator=generator)
    random_ids = torch.randint(vocab_size, shape, generator=generator)
    device = input_ids.device
    selected, action, random_ids = (to_device(t, device) for t in (selected, action, random_ids))
    masked = torch.where(selected & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return masked, labels


class MLMObjective:
    """Masked-token cross-entropy and accuracy of a masked LM whose ``[MASK]`` id is ``mask_id``."""

    def __init__(self, mask_id: int, vocab_size: int, mask_prob: float = 0.15) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie strictly between 0 and 1, got {mask_prob}")
        self.mask_id = mask_id
        self.vocab_size = vocab_size
        """Size of the shared vocabulary (random replacements never draw ``[MASK]``)."""
        self.mask_prob = mask_prob

    def corrupt(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.split == "train":
            return mask_tokens(batch.input_ids, self.mask_id, self.vocab_size, self.mask_prob)
        rows = [
            mask_tokens(
                batch.input_ids[i : i + 1],
                self.mask_id,
                self.vocab_size,
                self.mask_prob,
                torch.Generator().manual_seed(DEV_MASK_SEED + int(index)),
            )
            for i, index in enumerate(batch.chunk_index.tolist())
        ]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

    def __call__(self, model: nn.Module, batch: Batch) -> ObjectiveOutput:
        masked, labels = self.corrupt(batch)
        logits = model(input_ids=masked).logits
        flat = logits.reshape(-1, logits.size(-1)).float()
        targets = labels.reshape(-1)
        ce = F.cross_entropy(flat, targets, ignore_index=-100)
        with torch.no_grad():
            chosen = targets != -100
            accuracy = (flat[chosen].argmax(dim=-1) == targets[chosen]).float().mean()
        return ObjectiveOutput(loss=ce, metrics={"ce": ce.detach(), "accuracy": accuracy})
