"""`tinyminds prepare`: corpus folder -> cleaned text -> tokenizer -> 128-token chunks + manifest.

The output folder holds ``tokenizer/`` (a Hugging Face tokenizer folder), ``train.npy`` and
``dev.npy`` (``[n_chunks, chunk_size]`` token ids, uint16 when the vocabulary fits, loaded
memory-mapped) and ``manifest.json``. Each step is cached by content, never by name: the tokenizer
by the hash of the cleaned train text and its settings, each split's chunks by the hash of its
cleaned text and of the tokenizer. A rerun with the same inputs reuses everything; any change of
text or tokenizer rebuilds what depends on it. Every file is written to a temporary name and then
renamed, so an interrupted run never leaves a half-written file under its final name.

Documents are kept apart: a blank line in a source (and the end of each file) becomes one ``</s>``
token, so the model sees where one document ends and the next begins.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from tinyminds import __version__
from tinyminds.config import Range, check_ranges
from tinyminds.console import info, progress
from tinyminds.data.corpus import SourceText, find_corpus_files, hold_out, read_source
from tinyminds.data.tokenizer import (
    EOS_ID,
    encode_lines,
    load_tokenizer,
    save_hf_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from tinyminds.errors import UserError
from tinyminds.files import check_not_a_file, folder_lock, sha256_file

MANIFEST_FORMAT = 1
SPLITS = ("train", "dev")


@dataclass
class PrepareOptions:
    """Settings of `tinyminds prepare`."""

    vocab_size: Annotated[int, Range(260, 4_294_967_296)] = 16_000
    """Size of the byte-level BPE vocabulary, special tokens included (at least the 256 bytes
    plus <pad>, <s>, </s> and one merge)."""
    min_frequency: Annotated[int, Range(1)] = 2
    """A pair must occur this often to be merged."""
    chunk_size: Annotated[int, Range(2, 256)] = 128
    """Tokens per training chunk (at most the zoo models' 256 positions, `MAX_POSITIONS`)."""
    tokenizer: str | None = None
    """Use this tokenizer folder instead of training one (e.g. to match existing teachers)."""
    encoding_errors: str = "strict"
    """``strict``: a file that is not UTF-8 is an error; ``replace``: bad bytes become U+FFFD."""
    dev_fraction: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.1
    """Share of each train file's lines held out as dev when the corpus has no dev files."""

    def __post_init__(self) -> None:
        check_ranges(self)


def _combined_hash(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """The manifest of a prepared data folder, or a clear error if it is not one."""
    path = data_dir / "manifest.json"
    if not path.is_file():
        raise UserError(
            f"{data_dir} is not a prepared data folder (no manifest.json); "
            f"run: tinyminds prepare CORPUS_DIR --out {data_dir}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: corrupt manifest; rerun tinyminds prepare") from None


def _tokenize_split(
    texts: list[SourceText], tokenizer: Any, chunk_size: int, split: str
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """One split's chunks, and per-source counts (a chunk belongs to the source of its first token)."""
    total_lines = sum(len(t.lines) for t in texts)
    bar = progress(total_lines, f"tokenize {split}", unit="line")
    pieces: list[np.ndarray] = []
    sources: dict[str, dict[str, Any]] = {}
    offset, tokens_done, started = 0, 0, time.perf_counter()
    for text in texts:
        ids: list[int] = []
        previous_blank = True
        # Encode runs of non-blank lines; each run (a document) ends with </s>.
        run: list[str] = []
        for line in [*text.lines, ""]:
            if line:
                run.append(line)
                previous_blank = False
                continue
            if run:
                for line_ids in encode_lines(tokenizer, run):
                    ids.extend(line_ids)
                bar.update(len(run))
                run = []
            if not previous_blank:
                ids.append(EOS_ID)
            previous_blank = True
            bar.update(1)
        array = np.asarray(ids, dtype=np.int64)
        pieces.append(array)
        tokens_done += len(array)
        bar.set_postfix(tok_s=f"{tokens_done / max(time.perf_counter() - started, 1e-9):,.0f}")
        entry = sources.setdefault(
            text.source,
            {"files": [], "rule": text.rule, "words": 0, "lines": 0, "documents": 0, "tokens": 0},
        )
        entry["files"].append(
            {
                "path": text.path.name,
                "raw_sha256": text.raw_sha256,
                "clean_sha256": text.clean_sha256(),
            }
        )
        entry["words"] += text.words
        entry["lines"] += text.text_lines
        entry["documents"] += text.documents
        entry["tokens"] += len(array)
        entry.setdefault("_spans", []).append((offset, offset + len(array)))
        offset += len(array)
    bar.close()
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_chunks = len(stream) // chunk_size
    if n_chunks == 0:
        raise UserError(
            f"split '{split}' has {len(stream)} tokens, fewer than one chunk of {chunk_size}; "
            "give it more text"
        )
    for entry in sources.values():
        # Chunk c starts at token c * chunk_size: count the starts inside each of the source's spans.
        entry["chunks"] = sum(
            max(0, min(-(-end // chunk_size), n_chunks) - -(-start // chunk_size))
            for start, end in entry.pop("_spans")
        )
    return stream[: n_chunks * chunk_size].reshape(n_chunks, chunk_size), sources


def _save_array_staged(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` beside ``path`` under a temporary name; the caller renames it into place."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    return tmp


def prepare(corpus_dir: Path, out_dir: Path, options: PrepareOptions | None = None) -> dict:
    """Prepare ``corpus_dir`` into ``out_dir`` (see the module docstring); returns the manifest.

    The inputs are checked before ``out_dir`` is touched; then ``out_dir/.lock`` is held while it
    is written (a second ``prepare`` into it is refused)."""
    options = options or PrepareOptions()
    if options.encoding_errors not in ("strict", "replace"):
        raise UserError(
            f"--encoding-errors must be strict or replace, got {options.encoding_errors!r}"
        )
    find_corpus_files(corpus_dir)  # a missing or empty corpus: one line, nothing written
    check_not_a_file(out_dir, "--out")
    with folder_lock(out_dir, "tinyminds prepare"):
        return _prepare_locked(corpus_dir, out_dir, options)


def _prepare_locked(corpus_dir: Path, out_dir: Path, options: PrepareOptions) -> dict:
    started = time.perf_counter()
    files = find_corpus_files(corpus_dir)
    texts: dict[str, list[SourceText]] = {
        "train": [read_source(p, options.encoding_errors) for p in files.train],
        "dev": [read_source(p, options.encoding_errors) for p in files.dev],
    }
    dev_held_out = not texts["dev"]
    if dev_held_out:
        info(
            f"no dev files in {corpus_dir}: holding out the last {options.dev_fraction:.0%} of each train file"
        )
        pairs = [hold_out(t, options.dev_fraction) for t in texts["train"]]
        texts = {"train": [p[0] for p in pairs], "dev": [p[1] for p in pairs]}
    text_hashes = {
        split: _combined_hash([t.clean_sha256() for t in texts[split]]) for split in SPLITS
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        old = read_manifest(out_dir)
    except UserError:
        old = {}
    if old and old.get("format") != MANIFEST_FORMAT:
        old = {}

    # 1. Tokenizer: reuse when it was trained on the same text with the same settings.
    tokenizer_dir = out_dir / "tokenizer"
    if options.tokenizer:
        source_dir = Path(options.tokenizer)
        tokenizer_key = "given:" + tokenizer_hash(source_dir)
    else:
        tokenizer_key = _combined_hash(
            [
                text_hashes["train"],
                str(options.vocab_size),
                str(options.min_frequency),
                "bpe-bytelevel-nfkc",
            ]
        )
    old_tokenizer = old.get("tokenizer", {})
    # Nothing under out_dir is replaced until every split has been built: a run that fails
    # (a split smaller than one chunk, a full disk...) leaves the old folder as it was.
    staging: Path | None = None
    staged_arrays: dict[Path, Path] = {}
    try:
        if (
            old_tokenizer.get("key") == tokenizer_key
            and (tokenizer_dir / "tokenizer.json").is_file()
            and tokenizer_hash(tokenizer_dir) == old_tokenizer.get("hash")
        ):
            info("tokenizer: unchanged, reused")
            new_tokenizer_dir = tokenizer_dir
        else:
            staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir))
            if options.tokenizer:
                save_hf_tokenizer(load_tokenizer(Path(options.tokenizer)), staging)
                info(f"tokenizer: copied from {options.tokenizer}")
            else:
                info(f"tokenizer: training byte-level BPE ({options.vocab_size:,} tokens)")
                lines = (line for t in texts["train"] for line in t.lines if line)
                save_tokenizer(
                    train_tokenizer(lines, options.vocab_size, options.min_frequency), staging
                )
            new_tokenizer_dir = staging
        hf_tokenizer = load_tokenizer(new_tokenizer_dir)
        backend = hf_tokenizer.backend_tokenizer
        vocab_size = len(hf_tokenizer)
        tok_hash = tokenizer_hash(new_tokenizer_dir)
        dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32

        # 2. Chunks of each split: reuse when text, tokenizer and chunk size are unchanged.
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "tinyminds_version": __version__,
            "corpus": str(corpus_dir.resolve()),
            "layout": files.layout,
            "dev_held_out": dev_held_out,
            "options": asdict(options),
            "tokenizer": {
                "key": tokenizer_key,
                "hash": tok_hash,
                "vocab_size": vocab_size,
                "path": "tokenizer",
            },
            "splits": {},
        }
        for split in SPLITS:
            path = out_dir / f"{split}.npy"
            previous = old.get("splits", {}).get(split, {})
            reusable = (
                previous.get("text_hash") == text_hashes[split]
                and previous.get("tokenizer_hash") == tok_hash
                and previous.get("chunk_size") == options.chunk_size
                and path.is_file()
                and sha256_file(path) == previous.get("file_sha256")
            )
            if reusable:
                info(f"{split}: unchanged, reused {previous['chunks']:,} chunks")
                manifest["splits"][split] = previous
                continue
            chunks, sources = _tokenize_split(texts[split], backend, options.chunk_size, split)
            staged = staged_arrays[path] = _save_array_staged(chunks.astype(dtype), path)
            manifest["splits"][split] = {
                "file": path.name,
                "file_sha256": sha256_file(staged),
                "dtype": np.dtype(dtype).name,
                "chunk_size": options.chunk_size,
                "text_hash": text_hashes[split],
                "tokenizer_hash": tok_hash,
                "words": sum(s["words"] for s in sources.values()),
                "lines": sum(s["lines"] for s in sources.values()),
                "documents": sum(s["documents"] for s in sources.values()),
                "tokens": sum(s["tokens"] for s in sources.values()),
                "chunks": int(chunks.shape[0]),
                "replaced_bytes": sum(t.replaced_bytes for t in texts[split]),
                "sources": sources,
            }
            info(
                f"{split}: {manifest['splits'][split]['words']:,} words -> "
                f"{manifest['splits'][split]['tokens']:,} tokens -> {chunks.shape[0]:,} chunks"
            )

        # 3. Everything is built: move it into place, the manifest last.
        if staging is not None:
            if tokenizer_dir.exists():
                shutil.rmtree(tokenizer_dir)
            os.replace(staging, tokenizer_dir)
            staging = None
        for path, staged in list(staged_arrays.items()):
            os.replace(staged, path)
            del staged_arrays[path]
        manifest["seconds"] = round(time.perf_counter() - started, 2)
        _write_json_atomic(out_dir / "manifest.json", manifest)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for staged in staged_arrays.values():
            staged.unlink(missing_ok=True)
    return manifest
