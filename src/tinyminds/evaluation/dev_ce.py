"""Dev cross-entropy of a saved model, measured exactly as the training engine validates.

The engine validates on a fixed, seeded subset of dev chunks (`validation_subset` with the run's
``eval_chunks`` and ``eval_seed``) and averages each batch's mean next-token CE weighted by its
number of chunks (every chunk has the same length, so this is the mean over tokens). This module
does the same for a model folder that no tinyminds run validated: the untrained floor of
`tinyminds reproduce`, and models trained another way (`benchmarks/quality_vs_babyllama.py`), so
that their dev CE is comparable number for number with every tinyminds run on the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyminds.data.chunks import PreparedData, validation_subset
from tinyminds.training.objectives import causal_lm_cross_entropy


@torch.no_grad()
def dev_cross_entropy(
    model: nn.Module,
    data: PreparedData,
    eval_chunks: int,
    eval_seed: int,
    batch_size: int = 64,
) -> float:
    """Mean next-token CE (nats per token, fp32) of ``model`` on the validation subset of ``data``
    that a run with ``eval_chunks`` and ``eval_seed`` validates on."""
    chunks = data.chunks("dev")
    indices = validation_subset(len(chunks), eval_chunks, eval_seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(indices), batch_size):
        rows = indices[start : start + batch_size]
        ids = torch.from_numpy(chunks[rows].astype(np.int64)).to(device)
        total += causal_lm_cross_entropy(model(input_ids=ids).logits, ids).item() * len(rows)
    model.train(was_training)
    return total / len(indices)


def dev_cross_entropy_of_folder(
    model_dir: Path, data: PreparedData, eval_chunks: int, eval_seed: int, batch_size: int = 64
) -> float:
    """`dev_cross_entropy` of the Hugging Face causal LM saved in ``model_dir``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return dev_cross_entropy(model, data, eval_chunks, eval_seed, batch_size)
