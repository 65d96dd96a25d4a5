"""Training objectives: what the engine minimises (see `base` for the interface).

- `base`: the interface, plain language modelling (`CausalLMObjective`).
- `kd_losses`: the distillation losses as pure functions, each parity-tested.
- `distillation`: multi-teacher knowledge distillation, online or from the teacher-logit cache.
"""

from tinyminds.training.objectives.base import (
    Batch,
    CausalLMObjective,
    Objective,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
    next_token_labels,
)

__all__ = [
    "Batch",
    "CausalLMObjective",
    "Objective",
    "ObjectiveOutput",
    "SetupContext",
    "causal_lm_cross_entropy",
    "next_token_labels",
]
