"""Atomic, resumable checkpoints.

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNNNN`` holding the model, optimizer, scheduler
and loop state (``state.pt``) and each process's random-number states (``rng-rankR.pt``). It is
written under a hidden temporary name, flushed to disk, and only then renamed into place, so a
process killed at any moment (kill -9 included) leaves either the old set of checkpoints or the new
one, never a half-written checkpoint under a real name. A write that fails (a full disk) removes
its temporary folder and keeps every earlier checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyminds.errors import UserError
from tinyminds.files import disk_full_message, is_disk_full, sha256_file, write_json_atomic

_NAME = re.compile(r"^step-(\d{8})$")
CHECKSUMS = "checksums.json"
"""The SHA-256 of every other file of a checkpoint, verified before it is resumed from."""


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


def _write_failed(
    error: BaseException, staging: Path, final: Path, checkpoints: Path, needed: int | None
) -> UserError:
    """Remove the partial checkpoint and say why the write failed, in one line."""
    shutil.rmtree(staging, ignore_errors=True)
    previous = checkpoint_folders(checkpoints)
    kept = (
        f"the previous checkpoint {previous[-1]} is kept" if previous else "no earlier checkpoint"
    )
    if is_disk_full(error):
        reason = disk_full_message(checkpoints, needed)
    else:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
    return UserError(f"could not write checkpoint {final}: {reason}; {kept}")


def write_rank_part(staging: Path, rank: int) -> None:
    """Each process saves its own random states (dropout differs per process)."""
    try:
        torch.save(rng_state(), staging / f"rng-rank{rank}.pt")
    except (OSError, RuntimeError) as error:
        final = staging.parent / staging.name.removeprefix(".").removesuffix(".tmp")
        raise _write_failed(error, staging, final, staging.parent, None) from None


def _state_bytes(state: Any) -> int:
    """The bytes of the tensors in ``state`` (what ``torch.save`` will at least write)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(value) for value in state)
    return 0


def publish(checkpoints: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state.pt`` and ``checksums.json`` (the SHA-256 of every file) into the staging
    folder, flush, rename into place, drop old checkpoints.

    Raises `UserError` (after removing the staging folder, so that no partial checkpoint is left
    on a full disk) when the disk refuses the write.
    """
    staging = staging_folder(checkpoints, step)
    final = checkpoints / f"step-{step:08d}"
    try:
        torch.save(state, staging / "state.pt")
        sums = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        write_json_atomic(staging / CHECKSUMS, sums)
        fsync_folder(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except (OSError, RuntimeError) as error:
        raise _write_failed(error, staging, final, checkpoints, _state_bytes(state)) from None
    for old in checkpoint_folders(checkpoints)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(folder: Path) -> str | None:
    """Why checkpoint ``folder`` is corrupt (a file missing or not matching its recorded
    SHA-256), or None when it is intact. A checkpoint written before checksums existed has no
    ``checksums.json`` and is taken as it is."""
    listed = folder / CHECKSUMS
    if not listed.is_file():
        return None
    try:
        sums = json.loads(listed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{CHECKSUMS} is unreadable"
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} does not match its checksum"
    return None


def load_latest(checkpoints: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(loop state, this process's random states) of the newest complete checkpoint, or None.

    The checkpoint's files are checked against their checksums first: a corrupt one (bytes
    overwritten, a file truncated) is refused, naming it and the newest intact one before it."""
    if rank == 0 and checkpoints.is_dir():
        for stale in checkpoints.glob(".step-*.tmp"):  # left by a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
    folders = checkpoint_folders(checkpoints)
    if not folders:
        return None
    latest = folders[-1]
    problem = verify(latest)
    if problem is None:
        try:
            state = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
            rng_path = latest / f"rng-rank{rank}.pt"
            rng = torch.load(rng_path, weights_only=False) if rng_path.exists() else None
        except (OSError, RuntimeError, EOFError, ValueError) as error:
            problem = f"cannot be read ({' '.join(str(error).split())[:200]})"
        else:
            return state, rng
    good = next((f for f in reversed(folders[:-1]) if verify(f) is None), None)
    offer = (
        f"the previous checkpoint {good.name} is intact: delete {latest} and resume again to "
        f"continue from it"
        if good is not None
        else "no earlier intact checkpoint: start the run again in a new folder"
    )
    raise UserError(f"checkpoint {latest} is corrupt ({problem}); {offer}")
