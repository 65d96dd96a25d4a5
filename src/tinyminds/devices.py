"""Copies from the host to the device that do not stall the GPU."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (in host memory) on ``device``.

    To a GPU it goes through pinned memory. CUDA performs a copy from ordinary (pageable) host
    memory only after every kernel queued before it has finished, even with ``non_blocking``: a
    training step that copies its batch that way waits for the previous step to end, so the CPU
    cannot queue one step while the GPU computes the last. From pinned memory the copy is queued
    like a kernel (PyTorch keeps the pinned block alive until the copy is done).
    """
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
