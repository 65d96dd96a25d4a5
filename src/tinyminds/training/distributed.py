"""Data parallelism through torch.distributed, in a few lines.

Launch with ``torchrun --nproc_per_node N -m tinyminds train ...`` (or ``accelerate launch``, or one
torchrun per node for several nodes): both set RANK, WORLD_SIZE and LOCAL_RANK, which is all the
engine reads. NCCL on GPUs, gloo on the CPU. Workers die with their launcher
(`die_with_launcher`), so a killed torchrun leaves no worker writing into the run folder.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


def die_with_launcher() -> bool:
    """Under torchrun (or accelerate launch) on Linux, ask the kernel to kill this worker when its
    launcher dies; True where that was set up.

    torchrun starts its workers in sessions of their own, so a ``kill -9`` of the launcher (or of
    its process group) would leave them running: finishing a run into a folder that the user may
    meanwhile ``--resume`` into, then waiting forever for peers. With ``PR_SET_PDEATHSIG`` the
    kernel sends SIGKILL to the worker the moment its parent, the launcher, exits.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    return die_with_parent()


def die_with_parent() -> bool:
    """On Linux, have the kernel SIGKILL this process when its parent exits (``kill -9`` of the
    parent included); True where that was set up. Used by torchrun's workers and sweep workers."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before the request: follow it now
        os._exit(1)
    return True


PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal a process gets when its parent dies."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> DistContext:
        """Join the process group that torchrun/accelerate set up, or run alone."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        context = cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
        die_with_launcher()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return context

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average ``tensor`` over processes (a no-op alone)."""
        if self.enabled:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
