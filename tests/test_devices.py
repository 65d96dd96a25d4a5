"""`tinyminds.devices.to_device`: host-to-device copies that do not stall the GPU."""

from __future__ import annotations

import pytest
import torch

from tinyminds.devices import to_device


def test_on_the_cpu_the_tensor_is_used_as_it_is() -> None:
    tensor = torch.arange(6).reshape(2, 3)
    assert to_device(tensor, torch.device("cpu")) is tensor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_copy_to_the_gpu_is_queued_without_waiting_for_it() -> None:
    tensor = torch.arange(1 << 16, dtype=torch.int64).reshape(256, 256)
    device = torch.device("cuda")
    busy = torch.randn(4096, 4096, device=device)
    torch.cuda.set_sync_debug_mode("error")  # any call that waits for the GPU raises
    try:
        for _ in range(8):
            busy = busy @ busy.T / 4096  # queue work the copy must not wait for
        copied = to_device(tensor, device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert copied.is_cuda and torch.equal(copied.cpu(), tensor)
