"""Atomic, resumable checkpoints.

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNNNN`` holding the model, optimizer, scheduler
and loop state (``state.pt``) and each process's random-number states (``rng-rankR.pt``). It is
written under a hidden temporary name, flushed to disk, and only then renamed into place, so a
process killed at any moment (kill -9 included) leaves either the old set of checkpoints or the new
one, never a half-written checkpoint under a real name. A write that fails (a full disk) removes
its temporary folder and keeps every earlier checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyminds.errors import UserError

_NAME = re.compile(r"^step-(\d{8})$")


def fsync_folder(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder entry itself to disk (before a rename)."""
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_folders(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are not complete and never listed)."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def staging_folder(checkpoints: Path, step: int) -> Path:
    """Where every process writes its part of checkpoint ``step`` before it is published."""
    return checkpoints / f".step-{step:08d}.tmp"


def write_rank_part(staging: Path, rank: int) -> None:
    """Each process saves its own random states (dropout differs per process)."""
    torch.save(rng_state(), staging / f"rng-rank{rank}.pt")


def publish(checkpoints: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state.pt`` into the staging folder, flush, rename into place, drop old checkpoints.

    Raises `UserError` (after removing the staging folder) when the disk refuses the write.
    """
    staging = staging_folder(checkpoints, step)
    final = checkpoints / f"step-{step:08d}"
    try:
        torch.save(state, staging / "state.pt")
        fsync_folder(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        previous = checkpoint_folders(checkpoints)
        kept = (
            f"the previous checkpoint {previous[-1]} is kept"
            if previous
            else "no earlier checkpoint"
        )
        raise UserError(
            f"could not write checkpoint {final} ({error.strerror or error}); {kept}"
        ) from None
    for old in checkpoint_folders(checkpoints)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(checkpoints: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(loop state, this process's random states) of the newest complete checkpoint, or None."""
    if rank == 0 and checkpoints.is_dir():
        for stale in checkpoints.glob(".step-*.tmp"):  # left by a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
    folders = checkpoint_folders(checkpoints)
    if not folders:
        return None
    latest = folders[-1]
    try:
        state = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
        rng_path = latest / f"rng-rank{rank}.pt"
        rng = torch.load(rng_path, weights_only=False) if rng_path.exists() else None
    except (OSError, RuntimeError, EOFError) as error:
        raise UserError(
            f"checkpoint {latest} cannot be read ({error}); delete it to resume from the one before"
        ) from None
    return state, rng
