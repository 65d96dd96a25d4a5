"""Benchmark `tinyminds prepare` against data preparation done the BabyLlama way.

What is compared
----------------
* **tinyminds, cold**: `tinyminds.data.prepare.prepare(corpus, out, PrepareOptions())` into an empty
  folder: read + clean every file, train the 16,000-token byte-level BPE, tokenize both splits,
  write ``train.npy`` / ``dev.npy`` and the manifest (with every hash it records).
* **tinyminds, warm**: the same call again on the same folder; everything is reused from the
  content-keyed cache (the text is still read, cleaned and hashed to prove nothing changed).
* **tinyminds, given tokenizer**: `prepare` into a new folder with ``PrepareOptions(tokenizer=...)``
  set to the tokenizer of the cold run, so that no tokenizer is trained: read + clean + tokenize +
  chunk + save, the part that the baseline below also does.
* **BabyLlama way**: the same cleaned text (`tinyminds.data.corpus.read_source`, so that only the
  tokenization differs), the same trained tokenizer loaded as a `transformers` fast tokenizer, one
  ``tokenizer.encode(text)`` call on each file's whole text (no batching, as BabyLlama's dataset
  code does), and chunks of 128 tokens cut from a Python list of ids.

Why it is fair
--------------
Both sides read and clean the same files with the same code and use the same tokenizer, on the same
machine, one after the other in one process. The tinyminds runs do strictly more work than the
baseline (they also hash the text and the tokenizer, write ``.npy`` files with an fsync and a
manifest, and mark document ends with ``</s>``); the baseline keeps its chunks in memory and writes
nothing. For the cold run the baseline is charged the same tokenizer training, timed separately
with `tinyminds.data.tokenizer.train_tokenizer` on the same cleaned train lines (BabyLlama trains
its tokenizer with the same `tokenizers` BPE trainer).

Run it:  python benchmarks/bench_prepare.py [--corpus DIR] [--repeat N] [--json PATH]
(about 1.5 minutes on 2 CPU cores for babylm-mini, about 1 minute for each further repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from tinyminds.console import set_quiet
from tinyminds.data.corpus import SourceText, find_corpus_files, read_source
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.data.tokenizer import load_tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "babylm-mini.tar.gz"


@dataclass
class Row:
    way: str
    seconds: float
    tokens: int
    chunks: int
    baseline: str
    """Name of the row this one's ratio is taken against."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def extract_corpus(archive: Path, into: Path) -> Path:
    """Unpack the babylm-mini archive into ``into`` and return the corpus folder."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")
    folders = [p for p in into.iterdir() if p.is_dir()]
    if len(folders) != 1:
        raise SystemExit(f"{archive}: expected one top-level folder, found {folders}")
    return folders[0]


def read_corpus(corpus: Path) -> dict[str, list[SourceText]]:
    """Cleaned text of each split, exactly as `prepare` reads it."""
    files = find_corpus_files(corpus)
    if not files.dev:
        raise SystemExit(f"{corpus}: the baseline needs dev files (no held-out split)")
    return {
        "train": [read_source(p) for p in files.train],
        "dev": [read_source(p) for p in files.dev],
    }


def babyllama_way(corpus: Path, tokenizer_dir: Path, chunk_size: int) -> tuple[float, int, int]:
    """Read + clean, one ``tokenizer.encode(text)`` per file, chunks from Python lists.

    Returns (seconds, tokens, chunks) summed over both splits.
    """
    started = time.perf_counter()
    tokenizer = load_tokenizer(tokenizer_dir)
    texts = read_corpus(corpus)
    tokens = chunks = 0
    for split in ("train", "dev"):
        ids: list[int] = []
        for text in texts[split]:
            ids.extend(tokenizer.encode("\n".join(text.lines) + "\n"))
        usable = len(ids) - len(ids) % chunk_size
        split_chunks = [ids[i : i + chunk_size] for i in range(0, usable, chunk_size)]
        tokens += len(ids)
        chunks += len(split_chunks)
    return time.perf_counter() - started, tokens, chunks


def time_tokenizer_training(corpus: Path, options: PrepareOptions) -> float:
    """Seconds to train the BPE on the cleaned train lines (the same call `prepare` makes)."""
    started = time.perf_counter()
    texts = read_corpus(corpus)
    lines = (line for t in texts["train"] for line in t.lines if line)
    train_tokenizer(lines, options.vocab_size, options.min_frequency)
    return time.perf_counter() - started


def manifest_counts(manifest: dict[str, Any]) -> tuple[int, int, int]:
    """(words, tokens, chunks) over both splits."""
    splits = manifest["splits"].values()
    return (
        sum(s["words"] for s in splits),
        sum(s["tokens"] for s in splits),
        sum(s["chunks"] for s in splits),
    )


def timed_prepare(corpus: Path, out: Path, options: PrepareOptions) -> tuple[float, dict]:
    started = time.perf_counter()
    manifest = prepare(corpus, out, options)
    return time.perf_counter() - started, manifest


def run(corpus: Path, work: Path, repeat: int, label: str) -> dict[str, Any]:
    options = PrepareOptions()
    cold_runs = [timed_prepare(corpus, work / f"cold-{i}", options) for i in range(repeat)]
    cold_s = min(r[0] for r in cold_runs)
    manifest = cold_runs[0][1]
    words, tokens, chunks = manifest_counts(manifest)
    cold_dir = work / "cold-0"
    warm_s = min(timed_prepare(corpus, cold_dir, options)[0] for _ in range(repeat))

    tokenizer_dir = cold_dir / "tokenizer"
    given = PrepareOptions(tokenizer=str(tokenizer_dir))
    given_runs = [timed_prepare(corpus, work / f"given-{i}", given)[0] for i in range(repeat)]
    given_s = min(given_runs)

    baseline_runs = [
        babyllama_way(corpus, tokenizer_dir, options.chunk_size) for _ in range(repeat)
    ]
    base_s = min(r[0] for r in baseline_runs)
    _, base_tokens, base_chunks = baseline_runs[0]
    train_tok_s = min(time_tokenizer_training(corpus, options) for _ in range(repeat))

    rows = [
        Row(
            "BabyLlama way: encode(text) per file + list chunks",
            base_s,
            base_tokens,
            base_chunks,
            "",
        ),
        Row(
            "tinyminds prepare, given tokenizer (no training)",
            given_s,
            tokens,
            chunks,
            "BabyLlama way: encode(text) per file + list chunks",
        ),
        Row(
            "BabyLlama way + tokenizer training",
            train_tok_s + base_s,
            base_tokens,
            base_chunks,
            "",
        ),
        Row(
            "tinyminds prepare, cold (trains tokenizer)",
            cold_s,
            tokens,
            chunks,
            "BabyLlama way + tokenizer training",
        ),
        Row(
            "tinyminds prepare, warm (cache reused)",
            warm_s,
            tokens,
            chunks,
            "BabyLlama way + tokenizer training",
        ),
    ]
    by_name = {r.way: r for r in rows}
    return {
        "corpus": label,
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "repeat": repeat,
        "words": words,
        "tokens": {"tinyminds": tokens, "babyllama_way": base_tokens},
        "chunks": {"tinyminds": chunks, "babyllama_way": base_chunks},
        "splits": {
            split: {k: manifest["splits"][split][k] for k in ("words", "tokens", "chunks")}
            for split in manifest["splits"]
        },
        "cold_breakdown_seconds": {
            "total": cold_s,
            "tokenizer_training_standalone": train_tok_s,
            "read_clean_tokenize_chunk_save (given-tokenizer run)": given_s,
        },
        "rows": [
            {
                **asdict(r),
                "tokens_per_second": r.tokens_per_second,
                "speedup": (by_name[r.baseline].seconds / r.seconds) if r.baseline else 1.0,
            }
            for r in rows
        ],
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\ncorpus {result['corpus']}: {result['words']:,} words; "
        f"tinyminds {result['tokens']['tinyminds']:,} tokens -> {result['chunks']['tinyminds']:,} "
        f"chunks; BabyLlama way {result['tokens']['babyllama_way']:,} tokens -> "
        f"{result['chunks']['babyllama_way']:,} chunks (train + dev; best of {result['repeat']})"
    )
    header = ("way", "seconds", "tokens/s", "speedup vs baseline")
    lines = [header]
    for r in result["rows"]:
        ratio = f"{r['speedup']:.2f}x" if r["baseline"] else "1.00x (baseline)"
        lines.append((r["way"], f"{r['seconds']:.2f}", f"{r['tokens_per_second']:,.0f}", ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for line in lines[1:]:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(cells) + " |")
    b = result["cold_breakdown_seconds"]
    print(
        f"\ncold run {b['total']:.2f} s ~ tokenizer training {b['tokenizer_training_standalone']:.2f} s "
        f"(timed alone) + read/clean/tokenize/chunk/save "
        f"{b['read_clean_tokenize_chunk_save (given-tokenizer run)']:.2f} s (given-tokenizer run)"
    )
    print(
        "speedup = baseline seconds / this row's seconds; the cold and warm rows are compared "
        "with the baseline charged the same tokenizer training."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--corpus", type=Path, help="corpus folder (default: babylm-mini, extracted)"
    )
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="babylm-mini archive")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every way this many times and keep the best"
    )
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    set_quiet(True)
    hf_logging.set_verbosity_error()  # "sequence longer than model_max_length" for whole files

    with tempfile.TemporaryDirectory(prefix="tm-bench-prepare-") as tmp:
        work = Path(tmp)
        corpus = args.corpus
        if corpus is None:
            if not args.archive.is_file():
                raise SystemExit(f"no corpus: pass --corpus DIR ({args.archive} is absent)")
            corpus = extract_corpus(args.archive, work / "corpus")
        label = str(corpus) if args.corpus else f"{args.archive.name} (extracted to a temp folder)"
        result = run(corpus, work / "out", max(1, args.repeat), label)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
