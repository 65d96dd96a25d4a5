"""Objectives against naive reference formulas (float64, one position at a time)."""

from __future__ import annotations

import math

import torch

from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training.objectives import (
    Batch,
    CausalLMObjective,
    causal_lm_cross_entropy,
    next_token_labels,
)


def naive_next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """-mean over (sequence, position < last) of log softmax(logits[b, t])[ids[b, t + 1]]."""
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            row = [float(x) for x in logits[b, t]]
            top = max(row)
            log_norm = top + math.log(sum(math.exp(x - top) for x in row))
            total += log_norm - row[int(ids[b, t + 1])]
            count += 1
    return total / count


def test_cross_entropy_matches_naive_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 17, generator=generator, dtype=torch.float64) * 3
    ids = torch.randint(0, 17, (3, 9), generator=generator)
    got = causal_lm_cross_entropy(logits.float(), ids).item()
    assert math.isclose(got, naive_next_token_ce(logits, ids), rel_tol=1e-5)


def test_cross_entropy_casts_half_precision_to_float32() -> None:
    logits = torch.randn(2, 5, 11).to(torch.bfloat16)
    ids = torch.randint(0, 11, (2, 5))
    assert causal_lm_cross_entropy(logits, ids).dtype == torch.float32


def test_labels_are_the_next_token_and_ignore_the_last_position() -> None:
    ids = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert next_token_labels(ids).tolist() == [[6, 7, -100], [2, 3, -100]]


def test_objective_equals_transformers_own_lm_loss() -> None:
    torch.manual_seed(0)
    model = build_model(get_spec("llama-tiny"), 300).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        output = CausalLMObjective()(model, Batch(ids, torch.arange(2), "train"))
        reference = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(output.loss, reference)
    assert output.metrics["ce"] == output.loss
