"""Reading a prepared data folder: memory-mapped chunks, epoch permutations, the validation subset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyminds.data.prepare import read_manifest
from tinyminds.data.tokenizer import tokenizer_hash
from tinyminds.errors import UserError


@dataclass
class PreparedData:
    """A folder written by `tinyminds prepare`."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def tokenizer_dir(self) -> Path:
        return self.folder / self.manifest["tokenizer"]["path"]

    @property
    def tokenizer_hash(self) -> str:
        return self.manifest["tokenizer"]["hash"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def chunk_size(self) -> int:
        return int(self.manifest["splits"]["train"]["chunk_size"])

    def chunks(self, split: str) -> np.ndarray:
        """``[n_chunks, chunk_size]`` token ids of ``split``, memory-mapped (read-only)."""
        entry = self.manifest["splits"][split]
        path = self.folder / entry["file"]
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise UserError(
                f"{path}: cannot read prepared chunks ({error}); rerun tinyminds prepare"
            ) from None
        if array.shape != (entry["chunks"], entry["chunk_size"]):
            raise UserError(
                f"{path}: holds {array.shape} but the manifest says "
                f"({entry['chunks']}, {entry['chunk_size']}); rerun tinyminds prepare"
            )
        return array


def load_prepared(folder: Path) -> PreparedData:
    """Open a prepared data folder, or explain how to make one."""
    if not folder.exists():
        raise UserError(
            f"data folder {folder} does not exist; run: tinyminds prepare CORPUS_DIR --out {folder}"
        )
    data = PreparedData(folder, read_manifest(folder))
    if tokenizer_hash(data.tokenizer_dir) != data.tokenizer_hash:
        raise UserError(
            f"{data.tokenizer_dir}: tokenizer does not match {folder / 'manifest.json'}; "
            "rerun tinyminds prepare"
        )
    return data


def epoch_permutation(n_chunks: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the chunks in ``epoch``: a new permutation each epoch, a pure function of (seed, epoch).

    Being a pure function (not a generator advanced epoch after epoch) is what lets a resumed run
    find its place again without replaying earlier epochs.
    """
    return np.random.default_rng([seed, epoch]).permutation(n_chunks)


def chunks_read(
    n_chunks: int, seed: int, chunks_per_step: int, steps_per_epoch: int, total_steps: int
) -> np.ndarray:
    """Sorted indices of every training chunk that ``total_steps`` optimizer steps read.

    Epoch e reads the first ``steps * chunks_per_step`` chunks of `epoch_permutation` (the engine
    drops the remainder of each epoch); a run stopped by ``max_steps`` reads only part of the last
    epoch. What a teacher cache must hold for the run, and no more.
    """
    parts = [np.empty(0, dtype=np.int64)]
    for epoch in range(-(-total_steps // steps_per_epoch)):
        steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        parts.append(epoch_permutation(n_chunks, seed, epoch)[: steps * chunks_per_step])
    return np.unique(np.concatenate(parts))


def validation_subset(n_chunks: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed, seeded subset of ``size`` dev chunks (all of them when fewer)."""
    if size <= 0 or size >= n_chunks:
        return np.arange(n_chunks)
    return np.sort(np.random.default_rng(seed).choice(n_chunks, size=size, replace=False))
