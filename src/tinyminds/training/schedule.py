"""Learning-rate schedule: linear warm-up, then cosine decay (the paper's teachers and students)."""

from __future__ import annotations

import math


def cosine_with_warmup(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Rises linearly from 0 over ``warmup_steps``, then follows half a cosine from 1 down to
    ``min_ratio`` at ``total_steps`` (the same curve as transformers' cosine schedule when
    ``min_ratio`` is 0).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
