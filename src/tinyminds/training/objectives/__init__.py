"""Training objectives: what the engine minimises (see `base` for the interface).

- `base`: the interface, plain language modelling (`CausalLMObjective`).
- `kd_losses`: the distillation losses as pure functions, each parity-tested.
- `distillation`: multi-teacher knowledge distillation, online or from the teacher-logit cache.
- `contrastive`, `mate`: the paper's two variants (N-pair term; MATE-KD's adversarial generator).
- `mlm`: masked language modelling (the MATE-KD generator's pretraining).
"""

from tinyminds.training.objectives.base import (
    Batch,
    CausalLMObjective,
    Objective,
    ObjectiveOutput,
    SetupContext,
    SideSteps,
    causal_lm_cross_entropy,
    next_token_labels,
)

__all__ = [
    "Batch",
    "CausalLMObjective",
    "Objective",
    "ObjectiveOutput",
    "SetupContext",
    "SideSteps",
    "causal_lm_cross_entropy",
    "next_token_labels",
]
