"""The warm-up + cosine schedule, against transformers' own implementation and by hand."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from tinyminds.training.schedule import cosine_with_warmup


@pytest.mark.parametrize(("warmup", "total"), [(0, 50), (10, 100), (300, 1000), (7, 8)])
def test_matches_transformers_cosine_schedule(warmup: int, total: int) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    for step in range(total):
        assert cosine_with_warmup(step, warmup, total) == pytest.approx(reference.get_last_lr()[0])
        optimizer.step()
        reference.step()


def test_shape_by_hand() -> None:
    assert cosine_with_warmup(0, 10, 110) == 0.0
    assert cosine_with_warmup(5, 10, 110) == 0.5
    assert cosine_with_warmup(10, 10, 110) == 1.0
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.0)
    assert cosine_with_warmup(500, 10, 110) == pytest.approx(0.0)  # clamped after the end


def test_floor_ratio() -> None:
    assert cosine_with_warmup(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    midway = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert cosine_with_warmup(60, 10, 110, min_ratio=0.1) == pytest.approx(midway)
