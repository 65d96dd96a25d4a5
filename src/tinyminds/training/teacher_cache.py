"""The teacher cache: the teachers' ensemble distribution for every training token, computed once.

Why: in a distillation step the two teachers' forward passes and the full-vocabulary KL cost about
twice the student's own step (SPEC §5). The training corpus is a fixed set of 128-token chunks, so
the ensemble distribution of each chunk at temperature T never changes from one epoch to the next:
it is computed once, stored compactly, and read back every epoch instead of running the teachers.

What is stored, per token of every chunk: the ids of the ensemble's k most probable tokens, their
log-probabilities at temperature T, and the log of the mass left outside them. The k + 1 buckets
(k tokens and "everything else") form a proper distribution (their probabilities sum to 1, up to
the float16 rounding of the top-k values).

Only the chunks a run reads are computed: a run stopped by ``max_steps`` after a third of an epoch
costs a third of the full build. The arrays always have room for every chunk (created sparse, but
scattered rows written through the memory map make ext4 allocate most of the file: 81% of it for a
quarter of the chunks in a check here, so budget the full size) and ``filled.npy`` says which
chunks hold numbers; a later run that reads other chunks (more steps, another seed) computes only those
and adds them, and a lookup of a chunk that is not filled is an error, never a read of zeros.

Layout: a folder holding four ``.npy`` files, memory-mapped when read, and ``meta.json``:

- ``top_indices.npy``   ``[n_chunks, chunk_len, k]`` uint16 (int32 when the vocabulary exceeds 65,536)
- ``top_log_probs.npy`` ``[n_chunks, chunk_len, k]`` float16, sorted from most to least probable
- ``rest_log_prob.npy`` ``[n_chunks, chunk_len]`` float32, log of the remaining mass (``-inf`` when
  the top-k hold all of it, e.g. k = V)
- ``filled.npy``        ``[n_chunks]`` bool, the chunks computed so far
- ``representation_{i}.npy`` ``[n_chunks, width_i]``, one per teacher, only in a cache built for
  the contrastive objective: teacher i's sequence representation of each chunk (the N-pair term's
  input: ``hidden``, the mean-pooled last hidden states, float32; ``logits``, the logits averaged
  over the chunk, float16). They are fixed for fixed chunks, computed in the same teacher pass as
  the top-k buckets, and name the representation in the key, so a KD run and a contrastive run
  never share a cache. Size: ``4 * width / chunk_len`` bytes per token and teacher for ``hidden``
  (8 bytes at width 256 and 128-token chunks: 8 MB per million tokens), ``2 * V / chunk_len`` for
  ``logits`` (125 bytes at V = 8,000).

Bytes per token: ``k * (id_bytes + 2) + 4``, i.e. ``4k + 4`` with uint16 ids (k = 32: 132 bytes;
the ~13M tokens of BabyLM 10M take about 1.7 GB).

Validity: a cache is reused only when its ``meta.json`` carries exactly the expected key (a
sha256 of the teachers' weights, tokenizer, training data, k, T, ensemble weights and mode, and
``CACHE_FORMAT``; see `cache_key`), format, k and shapes, and each array file has exactly the byte
size its header and shape imply (a truncated file is detected). Anything else -- no folder, no
``meta.json``, another key, a short file -- is rebuilt, never read. A build writes into a hidden
staging folder beside the cache and renames it into place only when every array is filled and
flushed and ``meta.json`` written, so a process killed mid-build leaves no cache that looks
complete. Adding chunks to a published cache writes their rows in place and only then replaces
``filled.npy`` (written beside it and renamed), so a process killed while adding leaves those rows
unmarked, and they are computed again next time. The cache folder must be on a filesystem every process of a distributed run shares.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyminds.console import info, progress
from tinyminds.devices import to_device
from tinyminds.errors import UserError
from tinyminds.files import to_json
from tinyminds.training.checkpoint import fsync_folder

CACHE_FORMAT = 2

INDICES_FILE = "top_indices.npy"
VALUES_FILE = "top_log_probs.npy"
REST_FILE = "rest_log_prob.npy"
REPRESENTATION_FILE = "representation_{}.npy"
FILLED_FILE = "filled.npy"
META_FILE = "meta.json"

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_NOT_WEIGHTS = frozenset(
    {"training_args.bin"}
)  # written by transformers.Trainer: settings, not weights

EnsembleFn = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]"]
"""Token ids ``[B, L]`` -> the ensemble's log-probabilities ``[B, L, V]``, or (those, each
teacher's sequence representation ``[B, width_i]``) for a cache that stores representations."""


@dataclass(frozen=True)
class RepresentationSpec:
    """The per-chunk teacher representations a contrastive cache stores beside the top-k buckets."""

    kind: str
    """``hidden`` (mean-pooled last hidden states) or ``logits`` (logits averaged over the chunk)."""
    widths: tuple[int, ...]
    """Each teacher's representation width, in teacher order."""

    @property
    def dtype(self) -> np.dtype:
        """float32 for hidden states; float16 for logit means (V wide: half the disk)."""
        return np.dtype(np.float32 if self.kind == "hidden" else np.float16)

    def to_meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "widths": list(self.widths), "dtype": self.dtype.name}


# --- identity ---------------------------------------------------------------------------------


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over a model folder's weight files (``*.safetensors``, ``*.bin``) and ``config.json``.

    Files are taken in name order, each hashed with its name, streamed in 1 MiB blocks; other files
    (README, tokenizer, logs, ``training_args.bin``) do not change the fingerprint.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"teacher model folder {model_dir} does not exist")
    weights = sorted(
        p
        for p in model_dir.iterdir()
        if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and p.name not in _NOT_WEIGHTS
    )
    if not weights:
        raise UserError(f"{model_dir}: no weight files (*.safetensors or *.bin) to fingerprint")
    files = [*weights]
    config = model_dir / "config.json"
    if config.is_file():
        files.append(config)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def cache_key(
    *,
    teacher_fingerprints: list[str],
    tokenizer_hash: str,
    data_hash: str,
    k: int,
    temperature: float,
    weights: list[float],
    mode: str,
) -> str:
    """sha256 of a canonical JSON of everything that changes the cached numbers, and `CACHE_FORMAT`.

    Teacher order matters (it pairs each fingerprint with its weight).
    """
    if len(weights) != len(teacher_fingerprints):
        raise ValueError(
            f"{len(teacher_fingerprints)} teachers but {len(weights)} ensemble weights"
        )
    payload = {
        "format": CACHE_FORMAT,
        "teachers": list(teacher_fingerprints),
        "weights": [float(w) for w in weights],
        "tokenizer": tokenizer_hash,
        "data": data_hash,
        "k": int(k),
        "temperature": float(temperature),
        "mode": mode,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- layout -----------------------------------------------------------------------------------


def index_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every token id fits, else int32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)


def _expected_arrays(
    n_chunks: int,
    chunk_len: int,
    k: int,
    vocab_size: int,
    representations: RepresentationSpec | None = None,
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    arrays = {
        INDICES_FILE: ((n_chunks, chunk_len, k), index_dtype(vocab_size)),
        VALUES_FILE: ((n_chunks, chunk_len, k), np.dtype(np.float16)),
        REST_FILE: ((n_chunks, chunk_len), np.dtype(np.float32)),
    }
    if representations is not None:
        for i, width in enumerate(representations.widths):
            arrays[REPRESENTATION_FILE.format(i)] = ((n_chunks, width), representations.dtype)
    return arrays


def staging_folder(folder: Path) -> Path:
    """Where a build writes before publishing: a hidden sibling of ``folder``."""
    return folder.parent / (f".{folder.name}.tmp")


def _aside_folder(folder: Path) -> Path:
    return folder.parent / (f".{folder.name}.old")


@dataclass
class TeacherCache:
    """An opened, validated cache: three read-only memory maps."""

    folder: Path
    k: int
    top_indices: np.ndarray
    """``[n_chunks, chunk_len, k]`` token ids, uint16 (int32 for vocabularies over 65,536)."""
    top_log_probs: np.ndarray
    """``[n_chunks, chunk_len, k]`` float16 log-probabilities at temperature T, descending."""
    rest_log_prob: np.ndarray
    """``[n_chunks, chunk_len]`` float32 log of the mass outside the top k (``-inf`` allowed)."""
    filled: np.ndarray
    """``[n_chunks]`` bool: which chunks hold numbers (in memory)."""
    representations: list[np.ndarray] = field(default_factory=list)
    """Per teacher ``[n_chunks, width]`` sequence representations (contrastive caches only)."""

    @property
    def n_chunks(self) -> int:
        return int(self.rest_log_prob.shape[0])

    @property
    def chunk_len(self) -> int:
        return int(self.rest_log_prob.shape[1])

    @property
    def bytes_per_token(self) -> float:
        representations = sum(r.shape[1] * r.dtype.itemsize for r in self.representations)
        return float(
            self.k * (self.top_indices.dtype.itemsize + self.top_log_probs.dtype.itemsize)
            + self.rest_log_prob.dtype.itemsize
            + representations / self.chunk_len
        )

    def _rows(self, chunk_index: torch.Tensor) -> np.ndarray:
        """``chunk_index`` as numpy rows, checked to be in range and filled."""
        rows = chunk_index.detach().cpu().numpy().astype(np.int64, copy=False).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_chunks):
            raise IndexError(
                f"chunk index out of range 0..{self.n_chunks - 1} of the teacher cache {self.folder}"
            )
        if not self.filled[rows].all():
            missing = rows[~self.filled[rows]]
            raise RuntimeError(
                f"chunk {int(missing[0])} is not in the teacher cache {self.folder} "
                f"(it holds {int(self.filled.sum()):,} of {self.n_chunks:,} chunks)"
            )
        return rows

    def lookup_representations(
        self, chunk_index: torch.Tensor, device: torch.device
    ) -> list[torch.Tensor]:
        """Each teacher's ``[B, width]`` float32 representation of the chunks, on ``device``."""
        if not self.representations:
            raise RuntimeError(f"the teacher cache {self.folder} holds no representations")
        rows = self._rows(chunk_index)
        return [
            to_device(torch.from_numpy(np.ascontiguousarray(array[rows])), device).float()
            for array in self.representations
        ]

    def lookup(
        self, chunk_index: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids int64 ``[B, L, k]``, log-probs float32 ``[B, L, k]``, rest float32 ``[B, L]``) on ``device``.

        ``chunk_index``: a 1-D int64 CPU tensor of chunk indices into the training split.
        """
        rows = self._rows(chunk_index)
        ids = torch.from_numpy(np.asarray(self.top_indices[rows], dtype=np.int32))
        top = torch.from_numpy(np.ascontiguousarray(self.top_log_probs[rows]))
        rest = torch.from_numpy(np.ascontiguousarray(self.rest_log_prob[rows]))
        # int32 ids and float16 log-probs cross to the device at half the size, widened there.
        return (
            to_device(ids, device).long(),
            to_device(top, device).float(),
            to_device(rest, device),
        )


# --- opening ----------------------------------------------------------------------------------


def _npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why ``path`` is not a complete ``.npy`` file of ``shape`` and ``dtype``; None when it is."""
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(handle)
            else:
                header = np.lib.format.read_array_header_2_0(handle)
            data_offset = handle.tell()
    except (OSError, ValueError) as error:
        return f"{path.name} has no valid header ({error})"
    found_shape, fortran, found_dtype = header
    if tuple(found_shape) != shape or np.dtype(found_dtype) != dtype or fortran:
        return f"{path.name} holds {found_dtype} {tuple(found_shape)}, expected {dtype} {shape}"
    expected = data_offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        return f"{path.name} is {size:,} bytes, expected {expected:,} (truncated or damaged)"
    return None


def _cache_problem(
    folder: Path,
    key: str,
    n_chunks: int,
    chunk_len: int,
    representations: RepresentationSpec | None = None,
) -> str | None:
    """Why the cache in ``folder`` cannot be reused; None when it can."""
    meta_path = folder / META_FILE
    if not folder.is_dir():
        return "no cache yet"
    if not meta_path.is_file():
        return "no meta.json (an interrupted build)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"meta.json cannot be read ({error})"
    if not isinstance(meta, dict):
        return "meta.json is not an object"
    if meta.get("format") != CACHE_FORMAT:
        return f"format {meta.get('format')}, this tinyminds writes {CACHE_FORMAT}"
    if meta.get("key") != key:
        return "built for other teachers, data or settings (key differs)"
    if meta.get("n_chunks") != n_chunks or meta.get("chunk_len") != chunk_len:
        return (
            f"holds {meta.get('n_chunks')} chunks of {meta.get('chunk_len')} tokens, "
            f"expected {n_chunks} of {chunk_len}"
        )
    k, vocab_size = meta.get("k"), meta.get("vocab_size")
    if not isinstance(k, int) or k < 1 or not isinstance(vocab_size, int) or k > vocab_size:
        return f"meta.json has k={k!r}, vocab_size={vocab_size!r}"
    expected_representations = representations.to_meta() if representations else None
    if meta.get("representations") != expected_representations:
        return (
            f"holds representations {meta.get('representations')}, expected "
            f"{expected_representations}"
        )
    sizes = meta.get("bytes")
    if not isinstance(sizes, dict):
        return "meta.json records no file sizes"
    arrays = _expected_arrays(n_chunks, chunk_len, k, vocab_size, representations)
    for name, (shape, dtype) in arrays.items():
        problem = _npy_problem(folder / name, shape, dtype)
        if problem is None and sizes.get(name) != (folder / name).stat().st_size:
            problem = f"{name} is not the size meta.json recorded"
        if problem:
            return problem
    return _npy_problem(folder / FILLED_FILE, (n_chunks,), np.dtype(np.bool_))


def open_cache(
    folder: Path,
    key: str,
    n_chunks: int,
    chunk_len: int,
    representations: RepresentationSpec | None = None,
) -> TeacherCache | None:
    """The complete cache in ``folder`` when it is valid for ``key``, the shapes and the
    ``representations`` it must hold (None: none), else None.

    Says (`tinyminds.console.info`) why a cache is not reused. See the module docstring for the
    rules.
    """
    folder = Path(folder)
    problem = _cache_problem(folder, key, n_chunks, chunk_len, representations)
    if problem is not None:
        info(f"teacher cache {folder}: {problem}; it will be built")
        return None
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    return TeacherCache(
        folder=folder,
        k=int(meta["k"]),
        top_indices=np.load(folder / INDICES_FILE, mmap_mode="r"),
        top_log_probs=np.load(folder / VALUES_FILE, mmap_mode="r"),
        rest_log_prob=np.load(folder / REST_FILE, mmap_mode="r"),
        filled=np.load(folder / FILLED_FILE),
        representations=[
            np.load(folder / REPRESENTATION_FILE.format(i), mmap_mode="r")
            for i in range(len(representations.widths) if representations else 0)
        ],
    )


# --- building ---------------------------------------------------------------------------------


def top_k_buckets(
    log_probs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k ids, their log-probs, log of the rest) of normalised ``log_probs`` ``[..., V]``.

    The rest is a logsumexp over the entries outside the top k (the top k masked with ``-inf``),
    which stays accurate when the top k hold nearly all the mass, where ``log1p(-sum(exp(top)))``
    would cancel; with k = V it is ``-inf``, never NaN.
    """
    top, ids = torch.topk(log_probs, k, dim=-1)
    masked = log_probs.scatter(-1, ids, float("-inf"))
    return ids, top, torch.logsumexp(masked, dim=-1)


def sampled_buckets(
    log_probs: torch.Tensor, k: int, seeds: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k token ids drawn from each position's distribution, their log-probs, zeros) of ``[B, L, V]``.

    Drawn with replacement, with one generator per chunk seeded by ``seeds[b]``, so that a chunk's
    samples do not depend on which batch or process computed it. The empirical distribution of the
    k draws is an unbiased estimate of the teacher's, so the forward-KL gradient read from it is
    unbiased too, however flat the teacher is (a top-k cache keeps only the head of the
    distribution). The third array is the log of the mass the draws share, log 1 = 0 (the sampled
    KL is the hybrid one with no head: `kd_losses.chunked_hybrid_kl`).
    """
    batch, length, _ = log_probs.shape
    ids = torch.empty(batch, length, k, dtype=torch.long, device=log_probs.device)
    for row, seed in enumerate(seeds):
        generator = torch.Generator(device=log_probs.device).manual_seed(seed)
        ids[row] = torch.multinomial(log_probs[row].exp(), k, replacement=True, generator=generator)
    return ids, log_probs.gather(-1, ids), log_probs.new_zeros(batch, length)


def hybrid_buckets(
    log_probs: torch.Tensor, k: int, seeds: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k - k // 2`` most likely tokens, then ``k // 2`` tokens drawn from the rest of the
    distribution, with their log-probs, and the log of the rest's mass ``[B, L]``.

    The head is kept exactly; the tail, which a top-k cache drops and which holds most of a flat
    teacher's mass, is represented by draws (with replacement, one generator per chunk seeded by
    ``seeds[b]``) from the teacher's distribution restricted to the tokens outside the head. Each
    draw then stands for ``rest / (k // 2)`` of the mass, so the KL and its gradient read from the
    cache are unbiased for the tail and exact for the head (`kd_losses.chunked_hybrid_kl`).
    """
    n_tail = k // 2
    top_ids, top, rest = top_k_buckets(log_probs, k - n_tail)
    if n_tail == 0:
        return top_ids, top, rest
    batch, length, _ = log_probs.shape
    tail_ids = torch.empty(batch, length, n_tail, dtype=torch.long, device=log_probs.device)
    for row, seed in enumerate(seeds):
        tail = log_probs[row].exp().scatter(-1, top_ids[row], 0.0)
        # A position whose head holds all the mass has nothing to draw from; its draws get
        # weight rest = 0, so any token will do.
        tail[:, 0] += (tail.sum(dim=-1) <= 0).to(tail.dtype)
        generator = torch.Generator(device=log_probs.device).manual_seed(seed)
        tail_ids[row] = torch.multinomial(tail, n_tail, replacement=True, generator=generator)
    ids = torch.cat([top_ids, tail_ids], dim=-1)
    return ids, log_probs.gather(-1, ids), rest


def rank_share(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous share of ``rows`` that process ``rank`` fills (``np.array_split``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return np.array_split(np.asarray(rows, dtype=np.int64), world_size)[rank]


def create_arrays(
    staging: Path,
    *,
    n_chunks: int,
    chunk_len: int,
    k: int,
    vocab_size: int,
    representations: RepresentationSpec | None = None,
) -> None:
    """Start a build: an empty ``staging`` folder holding the arrays at full size."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    arrays = _expected_arrays(n_chunks, chunk_len, k, vocab_size, representations)
    for name, (shape, dtype) in arrays.items():
        array = np.lib.format.open_memmap(staging / name, mode="w+", dtype=dtype, shape=shape)
        array.flush()
        del array


def fill_rows(
    folder: Path,
    rows: np.ndarray,
    *,
    chunks: np.ndarray,
    ensemble_log_probs: EnsembleFn,
    k: int,
    vocab_size: int,
    batch_size: int,
    device: torch.device,
    selection: str = "topk",
    seed: int = 0,
    n_representations: int = 0,
) -> None:
    """Run the ensemble on ``chunks[rows]`` and write its top-k buckets (or k sampled tokens,
    ``selection="sample"``, or a top-k head and a sampled tail, ``selection="hybrid"``; chunk c
    drawn with seed ``seed + c``) into the arrays in ``folder``; with ``n_representations``,
    ``ensemble_log_probs`` also returns that many per-teacher representations, written beside.

    ``rows``: sorted chunk indices; neighbours are computed together so that writes stay local.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return
    indices = np.lib.format.open_memmap(folder / INDICES_FILE, mode="r+")
    values = np.lib.format.open_memmap(folder / VALUES_FILE, mode="r+")
    rest = np.lib.format.open_memmap(folder / REST_FILE, mode="r+")
    representations = [
        np.lib.format.open_memmap(folder / REPRESENTATION_FILE.format(i), mode="r+")
        for i in range(n_representations)
    ]
    chunk_len = int(chunks.shape[1])
    bar = progress(rows.size * chunk_len, "teacher cache", unit="tok")
    try:
        with torch.inference_mode():
            for start in range(0, rows.size, batch_size):
                batch_rows = rows[start : start + batch_size]
                input_ids = torch.from_numpy(np.asarray(chunks[batch_rows], dtype=np.int64))
                output = ensemble_log_probs(to_device(input_ids, device))
                log_probs, teacher_representations = (
                    output if isinstance(output, tuple) else (output, [])
                )
                if len(teacher_representations) != n_representations:
                    raise ValueError(
                        f"ensemble_log_probs returned {len(teacher_representations)} "
                        f"representations, expected {n_representations}"
                    )
                expected = (batch_rows.size, chunk_len, vocab_size)
                if tuple(log_probs.shape) != expected:
                    raise ValueError(
                        f"ensemble_log_probs returned shape {tuple(log_probs.shape)}, expected {expected}"
                    )
                seeds = [seed + int(row) for row in batch_rows]
                if selection == "sample":
                    ids, top, remainder = sampled_buckets(log_probs.float(), k, seeds)
                elif selection == "hybrid":
                    ids, top, remainder = hybrid_buckets(log_probs.float(), k, seeds)
                else:
                    ids, top, remainder = top_k_buckets(log_probs.float(), k)
                indices[batch_rows] = ids.cpu().numpy().astype(indices.dtype)
                values[batch_rows] = top.half().cpu().numpy()
                rest[batch_rows] = remainder.cpu().numpy()
                for array, representation in zip(
                    representations, teacher_representations, strict=True
                ):
                    array[batch_rows] = representation.float().cpu().numpy().astype(array.dtype)
                bar.update(batch_rows.size * chunk_len)
        for array in (indices, values, rest, *representations):
            array.flush()
    finally:
        bar.close()
        del indices, values, rest, representations


def _write_filled(folder: Path, filled: np.ndarray) -> None:
    """Replace ``filled.npy`` in ``folder`` atomically (written beside it, flushed, renamed)."""
    partial = folder / f".{FILLED_FILE}.tmp"
    with partial.open("wb") as handle:
        np.save(handle, filled.astype(np.bool_))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, folder / FILLED_FILE)
    fsync_folder(folder)


def _publish(staging: Path, folder: Path, meta: dict[str, Any]) -> None:
    """Write meta.json, flush everything, and rename ``staging`` to ``folder`` (replacing it)."""
    (staging / META_FILE).write_text(to_json(meta) + "\n", encoding="utf-8")
    fsync_folder(staging)
    aside = _aside_folder(folder)
    if aside.exists():
        shutil.rmtree(aside)
    if folder.exists():
        os.replace(folder, aside)
    os.replace(staging, folder)
    shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class CacheJob:
    """Everything a build or an extension of a cache needs; every process holds an equal one."""

    folder: Path
    key: str
    chunks: np.ndarray
    """``[n_chunks, chunk_len]`` token ids of the training split."""
    ensemble_log_probs: EnsembleFn
    """Token ids ``[B, L]`` on ``device`` -> the ensemble's log-probabilities ``[B, L, V]`` (and
    the teachers' representations when ``representations`` is set)."""
    k: int
    vocab_size: int
    batch_size: int
    device: torch.device
    selection: str = "topk"
    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None
    representations: RepresentationSpec | None = None

    @property
    def seed(self) -> int:
        """Seed of the sampled selection: chunk c draws with ``seed + c``, a function of the key."""
        return int(hashlib.sha256(self.key.encode()).hexdigest()[:8], 16)

    def fill(self, folder: Path, rows: np.ndarray) -> None:
        """This process's share of ``rows``, computed into the arrays in ``folder``."""
        fill_rows(
            folder,
            rank_share(rows, self.rank, self.world_size),
            chunks=self.chunks,
            ensemble_log_probs=self.ensemble_log_probs,
            k=self.k,
            vocab_size=self.vocab_size,
            batch_size=self.batch_size,
            device=self.device,
            selection=self.selection,
            seed=self.seed,
            n_representations=len(self.representations.widths) if self.representations else 0,
        )


def build_cache(job: CacheJob, rows: np.ndarray | None = None) -> TeacherCache:
    """Compute a new cache holding ``rows`` (default: every chunk) and publish it into the folder.

    Every process calls this with an equal job (its own ``rank``): rank 0 creates the staged
    arrays, each rank fills its contiguous share of the rows (`rank_share`), rank 0 writes
    ``filled.npy`` and ``meta.json`` and renames the staging folder into place; ``barrier``
    separates the phases. Returns the opened cache on every rank.
    """
    folder = Path(job.folder)
    if job.chunks.ndim != 2:
        raise ValueError(f"chunks must be [n_chunks, chunk_len], got shape {job.chunks.shape}")
    n_chunks, chunk_len = (int(n) for n in job.chunks.shape)
    if not 1 <= job.k <= job.vocab_size:
        raise ValueError(
            f"k must be between 1 and the vocabulary size {job.vocab_size}, got {job.k}"
        )
    rows = np.arange(n_chunks) if rows is None else np.unique(rows)
    staging = staging_folder(folder)
    started = time.perf_counter()
    try:
        if job.rank == 0:
            info(
                f"teacher cache: computing the ensemble's {job.selection} {job.k} tokens per "
                f"position for {rows.size:,} of {n_chunks:,} chunks "
                f"({rows.size * chunk_len:,} tokens) into {folder}"
            )
            folder.parent.mkdir(parents=True, exist_ok=True)
            create_arrays(
                staging,
                n_chunks=n_chunks,
                chunk_len=chunk_len,
                k=job.k,
                vocab_size=job.vocab_size,
                representations=job.representations,
            )
        job.barrier()
        job.fill(staging, rows)
        job.barrier()
        if job.rank == 0:
            filled = np.zeros(n_chunks, dtype=np.bool_)
            filled[rows] = True
            np.save(staging / FILLED_FILE, filled)
            arrays = _expected_arrays(
                n_chunks, chunk_len, job.k, job.vocab_size, job.representations
            )
            seconds = time.perf_counter() - started
            meta = {
                "format": CACHE_FORMAT,
                "key": job.key,
                "k": job.k,
                "selection": job.selection,
                "n_chunks": n_chunks,
                "chunk_len": chunk_len,
                "vocab_size": job.vocab_size,
                "representations": (job.representations.to_meta() if job.representations else None),
                "shapes": {name: list(shape) for name, (shape, _) in arrays.items()},
                "dtypes": {name: dtype.name for name, (_, dtype) in arrays.items()},
                "bytes": {name: (staging / name).stat().st_size for name in arrays},
                "world_size": job.world_size,
                "seconds": round(seconds, 2),
            }
            _publish(staging, folder, meta)
            _report(rows.size * chunk_len, seconds, rows.size, n_chunks)
    except OSError as error:
        if job.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise UserError(
            f"could not write the teacher cache {folder} ({error.strerror or error})"
        ) from None
    return _reopen(job, n_chunks, chunk_len, rows)


def extend_cache(job: CacheJob, cache: TeacherCache, rows: np.ndarray) -> TeacherCache:
    """Compute the chunks ``rows`` (not yet filled) into the published ``cache`` and mark them.

    Rows are written in place, then rank 0 replaces ``filled.npy``; a process killed before that
    leaves them unmarked (computed again next time), never marked and empty.
    """
    folder = Path(job.folder)
    n_chunks, chunk_len = cache.n_chunks, cache.chunk_len
    rows = np.unique(rows)
    started = time.perf_counter()
    if job.rank == 0:
        info(
            f"teacher cache: adding {rows.size:,} chunks to the {int(cache.filled.sum()):,} of "
            f"{n_chunks:,} that {folder} holds"
        )
    try:
        job.barrier()  # every process has decided before the folder changes
        job.fill(folder, rows)
        job.barrier()
        if job.rank == 0:
            filled = cache.filled.copy()
            filled[rows] = True
            _write_filled(folder, filled)
            _report(
                rows.size * chunk_len, time.perf_counter() - started, int(filled.sum()), n_chunks
            )
    except OSError as error:
        raise UserError(
            f"could not write the teacher cache {folder} ({error.strerror or error})"
        ) from None
    return _reopen(job, n_chunks, chunk_len, rows)


def _report(tokens: int, seconds: float, filled: int, n_chunks: int) -> None:
    info(
        f"teacher cache: {tokens:,} tokens in {seconds:.1f} s "
        f"({tokens / max(seconds, 1e-9):,.0f} tok/s); it holds {filled:,} of {n_chunks:,} chunks"
    )


def _reopen(job: CacheJob, n_chunks: int, chunk_len: int, rows: np.ndarray) -> TeacherCache:
    job.barrier()
    cache = open_cache(Path(job.folder), job.key, n_chunks, chunk_len, job.representations)
    if cache is None or not cache.filled[rows].all():
        raise RuntimeError(f"the teacher cache just written in {job.folder} does not validate")
    return cache


def open_or_build_cache(
    folder: Path,
    key: str,
    *,
    chunks: np.ndarray,
    ensemble_log_probs: EnsembleFn,
    k: int,
    vocab_size: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    selection: str = "topk",
    rows: np.ndarray | None = None,
    representations: RepresentationSpec | None = None,
) -> TeacherCache:
    """A cache in ``folder`` valid for ``key`` that holds the chunks ``rows`` (default: all), and
    the teachers' ``representations`` when given (``ensemble_log_probs`` then returns them too).

    Reuses a valid cache as it is when it holds them all, adds the missing ones to it
    (`extend_cache`), or builds a new one (`build_cache`, replacing whatever is there). Every
    process calls this; they all reach the same decision because the folder only changes after a
    barrier that every process reaches after deciding.
    """
    job = CacheJob(
        folder=Path(folder),
        key=key,
        chunks=chunks,
        ensemble_log_probs=ensemble_log_probs,
        k=k,
        vocab_size=vocab_size,
        batch_size=batch_size,
        device=device,
        selection=selection,
        rank=rank,
        world_size=world_size,
        barrier=barrier,
        representations=representations,
    )
    n_chunks, chunk_len = (int(n) for n in chunks.shape)
    needed = np.arange(n_chunks) if rows is None else np.unique(rows)
    cache = open_cache(job.folder, key, n_chunks, chunk_len, representations)
    if cache is None or cache.k != k:
        return build_cache(job, needed)
    missing = needed[~cache.filled[needed]]
    if missing.size:
        return extend_cache(job, cache, missing)
    info(f"teacher cache: reusing {folder}")
    return cache
