"""Tests for `tinyminds prepare` (`tinyminds.data.prepare`): layouts, manifest, cache, bad input, CLI.

Every corpus is a few dozen generated lines written under ``tmp_path``, prepared with a 300-token
vocabulary and 16-token chunks so that it still gives many chunks; one prepare takes well under a
second. The token stream is checked against an independent re-encoding of the cleaned text with
the saved tokenizer, so the test knows where every ``</s>`` must be.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from tinyminds.console import is_quiet, set_quiet
from tinyminds.data.chunks import load_prepared
from tinyminds.data.cleaning import clean_text, source_name
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.data.tokenizer import EOS_ID, tokenizer_hash
from tinyminds.errors import UserError
from tinyminds.files import LOCK_FILE

VOCAB = 300
CHUNK = 16
# fmt: off
WORDS = [
    "the", "a", "dog", "cat", "saw", "ran", "big", "small", "red", "happy", "mother", "father",
    "ball", "house", "tree", "went", "home", "and", "but", "then", "little", "girl", "boy", "said",
    "look", "at", "my", "we", "you", "they", "play", "with", "water", "sun", "is", "was",
]
# fmt: on


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    was = is_quiet()
    set_quiet(True)
    yield
    set_quiet(was)


def options(**changes: Any) -> PrepareOptions:
    return PrepareOptions(**{"vocab_size": VOCAB, "chunk_size": CHUNK, **changes})


def text(seed: int, n_lines: int = 40, doc_every: int = 7) -> str:
    """Generated sentences; a blank line after every ``doc_every`` lines ends a document."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(n_lines):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + ".")
        if (i + 1) % doc_every == 0 and i + 1 < n_lines:
            lines.append("")
    return "\n".join(lines) + "\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def make_corpus(root: Path, layout: str = "2024") -> Path:
    """A two-source corpus in one of the supported layouts; returns ``root``."""
    train_dir, dev_dir, train_ext, dev_ext = {
        "2024": ("train_10M", "dev", ".train", ".dev"),
        "2023": ("babylm_10M", "babylm_dev", ".train", ".dev"),
        "train-dev": ("train", "dev", ".train", ".dev"),
        "flat": (".", ".", ".train", ".dev"),
        "txt": (".", None, ".txt", None),
    }[layout]
    for seed, source in enumerate(("switchboard", "childes")):
        write(root / train_dir / f"{source}{train_ext}", text(seed))
        if dev_dir is not None:
            write(root / dev_dir / f"{source}{dev_ext}", text(100 + seed, n_lines=15))
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


def stamp(path: Path) -> tuple[int, int]:
    """Inode and mtime: a file rewritten by write-then-rename gets a new inode, even in one tick."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def snapshot(folder: Path) -> dict[str, tuple[str, tuple[int, int]]]:
    """Every file under ``folder`` with its content hash and stamp, but the folder's lock file
    (prepare writes its holder there while it runs, and empties it when it stops)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), stamp(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def documents(path: Path) -> list[list[str]]:
    """The cleaned documents of one corpus file: runs of non-blank lines."""
    cleaned = clean_text(source_name(path.stem), path.read_text(encoding="utf-8"))
    docs: list[list[str]] = [[]]
    for line in cleaned.split("\n"):
        if line.strip():
            docs[-1].append(line.rstrip())
        elif docs[-1]:
            docs.append([])
    return [d for d in docs if d]


def expected_tokens(tokenizer: Any, path: Path) -> list[int]:
    """One file's tokens: each line with its newline, ``</s>`` after every document."""
    ids: list[int] = []
    for doc in documents(path):
        for line in doc:
            ids.extend(tokenizer.encode(line + "\n", add_special_tokens=False))
        ids.append(EOS_ID)
    return ids


def without_seconds(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "seconds"}


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --- layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "name", "held_out"),
    [
        ("2024", "babylm-2024", False),
        ("2023", "babylm-2023", False),
        ("train-dev", "folder", False),
        ("flat", "folder", False),
        ("txt", "folder", True),
    ],
)
def test_layouts(tmp_path: Path, layout: str, name: str, held_out: bool) -> None:
    corpus = make_corpus(tmp_path / "corpus", layout)
    manifest = prepare(corpus, tmp_path / "out", options())
    assert manifest["layout"] == name
    assert manifest["dev_held_out"] is held_out
    train, dev = manifest["splits"]["train"], manifest["splits"]["dev"]
    assert train["chunks"] > 0 and dev["chunks"] > 0
    assert list(train["sources"]) == ["childes", "switchboard"]  # sorted file order
    all_words = sum(
        len(line.split())
        for p in corpus.rglob("*")
        if p.is_file() and p.suffix in (".train", ".txt")
        for line in p.read_text().splitlines()
    )
    if held_out:
        # The held-out dev is the tail of each train file: together they are the whole text.
        assert train["words"] + dev["words"] == all_words
        assert 0 < dev["words"] < train["words"]
        assert [f["path"] for s in dev["sources"].values() for f in s["files"]] == [
            "childes.txt",
            "switchboard.txt",
        ]
    else:
        assert train["words"] == all_words
    assert load_prepared(tmp_path / "out").chunks("dev").shape == (dev["chunks"], CHUNK)


def test_files_are_read_in_sorted_order(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    # Created out of order: zeta first, then alpha, then Beta (uppercase sorts first).
    for seed, name in enumerate(("zeta", "alpha", "Beta")):
        write(corpus / "train" / f"{name}.train", text(seed))
        write(corpus / "dev" / f"{name}.dev", text(50 + seed, n_lines=10))
    out = tmp_path / "out"
    manifest = prepare(corpus, out, options())
    for split in ("train", "dev"):
        files = [
            f["path"] for s in manifest["splits"][split]["sources"].values() for f in s["files"]
        ]
        assert files == sorted(files) == [f"Beta.{split}", f"alpha.{split}", f"zeta.{split}"]
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    stream = [
        t
        for name in ("Beta", "alpha", "zeta")
        for t in expected_tokens(tokenizer, corpus / "train" / f"{name}.train")
    ]
    chunks = load_prepared(out).chunks("train")
    assert chunks.reshape(-1).tolist() == stream[: chunks.size]


def test_layout_is_chosen_by_folder_names_not_by_other_files(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", "2024")
    write(corpus / "README.md", "not a corpus file\n")
    write(corpus / "train_10M" / "notes.md", "ignored\n")
    manifest = prepare(corpus, tmp_path / "out", options())
    assert manifest["layout"] == "babylm-2024"
    assert sorted(manifest["splits"]["train"]["sources"]) == ["childes", "switchboard"]


# --- manifest and chunks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """A 2024-layout corpus with several documents per file, prepared once for read-only tests."""
    set_quiet(True)
    root = tmp_path_factory.mktemp("prepared")
    corpus = make_corpus(root / "corpus", "2024")
    # A third source with leading, repeated and trailing blank lines, and a doc split across lines.
    write(
        corpus / "train_10M" / "bnc_spoken.train",
        "\n\nhello , world .\nhow  are you ?\n\n\n\n" + text(7, n_lines=20) + "\n\n",
    )
    write(corpus / "dev" / "bnc_spoken.dev", "yes , it is .\n\nno !\n")
    out = root / "out"
    manifest = prepare(corpus, out, options())
    set_quiet(False)
    return corpus, out, manifest


SPLIT_DIRS = {"train": ("train_10M", ".train"), "dev": ("dev", ".dev")}


def split_files(corpus: Path, split: str) -> list[Path]:
    folder, ext = SPLIT_DIRS[split]
    return sorted((corpus / folder).glob(f"*{ext}"))


@pytest.mark.parametrize("split", ["train", "dev"])
def test_manifest_counts(prepared: tuple[Path, Path, dict[str, Any]], split: str) -> None:
    corpus, out, manifest = prepared
    entry = manifest["splits"][split]
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    for path in split_files(corpus, split):
        source = entry["sources"][source_name(path.stem)]
        docs = documents(path)
        assert source["words"] == sum(len(line.split()) for d in docs for line in d)
        assert source["lines"] == sum(len(d) for d in docs)
        assert source["documents"] == len(docs)
        assert source["tokens"] == len(expected_tokens(tokenizer, path))
        assert source["chunks"] >= 0
        [file] = source["files"]
        assert file["path"] == path.name
        assert file["raw_sha256"] == sha256(path)
    for key in ("words", "lines", "documents", "tokens", "chunks"):
        assert entry[key] == sum(s[key] for s in entry["sources"].values()), key
    assert entry["chunks"] == entry["tokens"] // CHUNK
    assert entry["chunk_size"] == CHUNK
    assert entry["file_sha256"] == sha256(out / entry["file"])
    assert entry["tokenizer_hash"] == manifest["tokenizer"]["hash"]
    assert entry["replaced_bytes"] == 0
    assert entry["dtype"] == "uint16"


def test_manifest_records_the_tokenizer(prepared: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, manifest = prepared
    assert manifest["tokenizer"]["hash"] == tokenizer_hash(out / "tokenizer")
    assert manifest["tokenizer"]["vocab_size"] == VOCAB
    assert manifest["tokenizer"]["path"] == "tokenizer"
    assert read_json(out / "manifest.json") == manifest
    data = load_prepared(out)
    assert data.tokenizer_hash == manifest["tokenizer"]["hash"]
    assert data.tokenizer_dir == out / "tokenizer"
    assert (data.vocab_size, data.chunk_size) == (VOCAB, CHUNK)


@pytest.mark.parametrize("split", ["train", "dev"])
def test_chunks_are_the_token_stream_cut_into_pieces(
    prepared: tuple[Path, Path, dict[str, Any]], split: str
) -> None:
    corpus, out, manifest = prepared
    entry = manifest["splits"][split]
    chunks = load_prepared(out).chunks(split)
    assert isinstance(chunks, np.memmap)
    assert chunks.dtype == np.uint16
    assert chunks.shape == (entry["chunks"], CHUNK)
    assert not chunks.flags.writeable

    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    per_file = [expected_tokens(tokenizer, p) for p in split_files(corpus, split)]
    stream = [t for ids in per_file for t in ids]
    assert len(stream) == entry["tokens"]
    assert chunks.reshape(-1).tolist() == stream[: entry["chunks"] * CHUNK]
    # Every document ends with exactly one </s>: as many as there are documents.
    assert stream.count(EOS_ID) == entry["documents"]

    # A chunk belongs to the source of its first token.
    owner = [
        source_name(p.stem)
        for p, ids in zip(split_files(corpus, split), per_file, strict=True)
        for _ in ids
    ]
    counted = {s: 0 for s in entry["sources"]}
    for c in range(entry["chunks"]):
        counted[owner[c * CHUNK]] += 1
    assert counted == {s: v["chunks"] for s, v in entry["sources"].items()}


def test_cleaning_is_applied(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus")
    subtitles = "Subtitles by Zorro Xanadu\n" + text(9, n_lines=20)
    write(corpus / "train_10M" / "open_subtitles.train", subtitles)
    out = tmp_path / "out"
    manifest = prepare(corpus, out, options())
    source = manifest["splits"]["train"]["sources"]["open_subtitles"]
    assert source["rule"] == "open_subtitles"
    assert source["words"] == len(text(9, n_lines=20).split())
    assert source["lines"] == 20
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    decoded = tokenizer.decode(load_prepared(out).chunks("train").reshape(-1).tolist())
    assert "Zorro" not in decoded and "Subtitles" not in decoded
    # The rest of the file is there, right after childes.train (files are read sorted by name).
    assert text(9, n_lines=20).split("\n")[0] in decoded


# --- cache ------------------------------------------------------------------------------------


def artefacts(out: Path) -> dict[str, tuple[int, int]]:
    return {
        name: stamp(out / name) for name in ("tokenizer/tokenizer.json", "train.npy", "dev.npy")
    }


def test_second_prepare_reuses_everything(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    before = artefacts(out)
    second = prepare(corpus, out, options())
    assert artefacts(out) == before
    assert without_seconds(second) == without_seconds(first)
    assert without_seconds(read_json(out / "manifest.json")) == without_seconds(first)


@pytest.mark.parametrize("change", ["one-character", "new-words"])
def test_changing_a_train_file_retrains_the_tokenizer(
    corpus: Path, tmp_path: Path, change: str
) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    before = artefacts(out)
    path = corpus / "train_10M" / "childes.train"
    content = path.read_text()
    if change == "one-character":
        write(path, "Z" + content[1:])
    else:
        write(path, content.replace("the ", "quixotic zebra "))
    second = prepare(corpus, out, options())
    after = artefacts(out)
    assert second["tokenizer"]["key"] != first["tokenizer"]["key"]
    assert after["tokenizer/tokenizer.json"] != before["tokenizer/tokenizer.json"]
    assert after["train.npy"] != before["train.npy"]
    assert second["splits"]["train"]["text_hash"] != first["splits"]["train"]["text_hash"]
    assert second["splits"]["dev"]["text_hash"] == first["splits"]["dev"]["text_hash"]
    if change == "one-character":
        # One character does not move a 300-token BPE: the retrained tokenizer is identical, so
        # dev (keyed by its text and the tokenizer's hash, never by a name) is rightly reused.
        assert second["tokenizer"]["hash"] == first["tokenizer"]["hash"]
        assert after["dev.npy"] == before["dev.npy"]
        assert second["splits"]["dev"] == first["splits"]["dev"]
    else:
        assert second["tokenizer"]["hash"] != first["tokenizer"]["hash"]
        assert after["dev.npy"] != before["dev.npy"]
    for split in ("train", "dev"):
        assert second["splits"][split]["tokenizer_hash"] == second["tokenizer"]["hash"]
        assert second["splits"][split]["file_sha256"] == sha256(out / f"{split}.npy")
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    stream = [t for p in split_files(corpus, "train") for t in expected_tokens(tokenizer, p)]
    chunks = load_prepared(out).chunks("train")
    assert chunks.reshape(-1).tolist() == stream[: chunks.size]


def test_changing_only_a_dev_file_rebuilds_only_dev(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    before = artefacts(out)
    write(corpus / "dev" / "childes.dev", text(555, n_lines=15))
    second = prepare(corpus, out, options())
    after = artefacts(out)
    assert after["tokenizer/tokenizer.json"] == before["tokenizer/tokenizer.json"]
    assert after["train.npy"] == before["train.npy"]
    assert after["dev.npy"] != before["dev.npy"]
    assert second["tokenizer"] == first["tokenizer"]
    assert second["splits"]["train"] == first["splits"]["train"]
    assert second["splits"]["dev"]["text_hash"] != first["splits"]["dev"]["text_hash"]
    assert second["splits"]["dev"]["file_sha256"] == sha256(out / "dev.npy")


def test_changing_the_vocabulary_size_rebuilds_everything(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    before = artefacts(out)
    second = prepare(corpus, out, options(vocab_size=280))
    after = artefacts(out)
    assert all(after[name] != before[name] for name in before)
    assert second["tokenizer"]["vocab_size"] == 280
    assert second["tokenizer"]["hash"] != first["tokenizer"]["hash"]
    assert second["splits"]["train"]["tokens"] > first["splits"]["train"]["tokens"]


def test_changing_the_chunk_size_rebuilds_chunks_only(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    before = artefacts(out)
    second = prepare(corpus, out, options(chunk_size=8))
    after = artefacts(out)
    assert after["tokenizer/tokenizer.json"] == before["tokenizer/tokenizer.json"]
    assert after["train.npy"] != before["train.npy"]
    assert second["splits"]["train"]["tokens"] == first["splits"]["train"]["tokens"]
    assert load_prepared(out).chunks("train").shape == (second["splits"]["train"]["chunks"], 8)


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_a_damaged_npy_is_detected_and_rebuilt(corpus: Path, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    first = prepare(corpus, out, options())
    original = np.load(out / "train.npy")
    before = artefacts(out)
    npy = out / "train.npy"
    data = npy.read_bytes()
    if damage == "overwrite":
        npy.write_bytes(data[:-8] + b"\xff" * 8)
    else:
        npy.write_bytes(data[: len(data) // 2])
    second = prepare(corpus, out, options())
    assert artefacts(out)["train.npy"] != before["train.npy"]
    assert artefacts(out)["tokenizer/tokenizer.json"] == before["tokenizer/tokenizer.json"]
    assert artefacts(out)["dev.npy"] == before["dev.npy"]
    assert np.array_equal(np.load(npy), original)
    assert without_seconds(second) == without_seconds(first)


def test_given_tokenizer_is_copied(corpus: Path, tmp_path: Path) -> None:
    first = prepare(corpus, tmp_path / "first", options())
    other = tmp_path / "other"
    write(other / "train" / "gutenberg.train", text(31, n_lines=30))
    write(other / "dev" / "gutenberg.dev", text(32, n_lines=10))
    given = str(tmp_path / "first" / "tokenizer")
    out = tmp_path / "second"
    second = prepare(other, out, options(tokenizer=given, vocab_size=999))
    assert second["tokenizer"]["hash"] == first["tokenizer"]["hash"]
    assert tokenizer_hash(out / "tokenizer") == first["tokenizer"]["hash"]
    assert second["tokenizer"]["vocab_size"] == VOCAB
    assert second["tokenizer"]["key"].startswith("given:")
    # And it is cached like a trained one.
    before = artefacts(out)
    third = prepare(other, out, options(tokenizer=given, vocab_size=999))
    assert artefacts(out) == before
    assert without_seconds(third) == without_seconds(second)


def test_given_tokenizer_that_does_not_exist(corpus: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tokenizer"
    with pytest.raises(UserError) as error:
        prepare(corpus, tmp_path / "out", options(tokenizer=str(missing)))
    assert str(missing) in str(error.value)


# --- bad input --------------------------------------------------------------------------------


def prepare_error(corpus: Path, out: Path, **changes: Any) -> str:
    with pytest.raises(UserError) as error:
        prepare(corpus, out, options(**changes))
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_corpus_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    message = prepare_error(missing, tmp_path / "out")
    assert str(missing) in message and "does not exist" in message


def test_corpus_that_is_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "childes.train", text(1))
    message = prepare_error(path, tmp_path / "out")
    assert str(path) in message and "not a folder" in message


def test_empty_corpus_folder(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    message = prepare_error(tmp_path / "corpus", tmp_path / "out")
    assert str(tmp_path / "corpus") in message


def test_train_folder_without_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "train_10M" / "notes.md", "no corpus here\n")
    write(corpus / "dev" / "childes.dev", text(1))
    message = prepare_error(corpus, tmp_path / "out")
    assert "'train'" in message and str(corpus / "train_10M") in message


def test_dev_folder_present_but_empty(corpus: Path, tmp_path: Path) -> None:
    for path in (corpus / "dev").iterdir():
        path.unlink()
    message = prepare_error(corpus, tmp_path / "out")
    assert "'dev'" in message and str(corpus / "dev") in message


@pytest.mark.parametrize("content", ["", "  \n\n\t \n"], ids=["zero-bytes", "whitespace"])
@pytest.mark.parametrize("where", ["train_10M/gutenberg.train", "dev/gutenberg.dev"])
def test_empty_file(corpus: Path, tmp_path: Path, content: str, where: str) -> None:
    path = write(corpus / where, content)
    message = prepare_error(corpus, tmp_path / "out")
    assert str(path) in message and "empty" in message


def bad_utf8_corpus(corpus: Path) -> Path:
    lines = text(3).encode().split(b"\n")
    lines[2] = lines[2][:4] + b"\xff\xfe" + lines[2][4:]  # line 3
    return write(corpus / "train_10M" / "childes.train", b"\n".join(lines))


def test_invalid_utf8_names_file_and_line(corpus: Path, tmp_path: Path) -> None:
    path = bad_utf8_corpus(corpus)
    message = prepare_error(corpus, tmp_path / "out")
    assert str(path) in message
    assert "line 3" in message
    assert "--encoding-errors replace" in message


def test_invalid_utf8_with_encoding_errors_replace(corpus: Path, tmp_path: Path) -> None:
    bad_utf8_corpus(corpus)
    manifest = prepare(corpus, tmp_path / "out", options(encoding_errors="replace"))
    assert manifest["splits"]["train"]["replaced_bytes"] > 0
    assert manifest["splits"]["dev"]["replaced_bytes"] == 0


def test_invalid_utf8_replaced_in_a_held_out_corpus(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", "txt")
    data = (corpus / "childes.txt").read_bytes()
    write(corpus / "childes.txt", b"\xff" + data)
    manifest = prepare(corpus, tmp_path / "out", options(encoding_errors="replace"))
    assert manifest["dev_held_out"] is True
    replaced = sum(manifest["splits"][s]["replaced_bytes"] for s in ("train", "dev"))
    assert replaced > 0


@pytest.mark.parametrize("split", ["train", "dev"])
def test_split_smaller_than_one_chunk(corpus: Path, tmp_path: Path, split: str) -> None:
    folder, ext = SPLIT_DIRS[split]
    for path in (corpus / folder).iterdir():
        path.unlink()
    write(corpus / folder / f"childes{ext}", "hi .\n")
    message = prepare_error(corpus, tmp_path / "out")
    assert f"'{split}'" in message and "chunk" in message


def test_bad_options(corpus: Path, tmp_path: Path) -> None:
    assert "chunk_size" in prepare_error(corpus, tmp_path / "out", chunk_size=1)
    assert "ignore" in prepare_error(corpus, tmp_path / "out", encoding_errors="ignore")


def _break_utf8(corpus: Path) -> None:
    bad_utf8_corpus(corpus)


def _empty_dev_file(corpus: Path) -> None:
    write(corpus / "dev" / "childes.dev", "")


def _remove_corpus(corpus: Path) -> None:
    for path in sorted(corpus.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    corpus.rmdir()


def _new_train_tiny_dev(corpus: Path) -> None:
    # Train is new and fine (the tokenizer would be retrained), dev is too small for one chunk.
    write(corpus / "train_10M" / "childes.train", text(77))
    for path in (corpus / "dev").iterdir():
        path.unlink()
    write(corpus / "dev" / "childes.dev", "ok .\n")


def _tiny_train(corpus: Path) -> None:
    for path in (corpus / "train_10M").iterdir():
        path.unlink()
    write(corpus / "train_10M" / "childes.train", "hi there .\n")


@pytest.mark.parametrize(
    "breakage", [_break_utf8, _empty_dev_file, _remove_corpus, _new_train_tiny_dev, _tiny_train]
)
def test_failed_prepare_loses_nothing(
    corpus: Path, tmp_path: Path, breakage: Callable[[Path], None]
) -> None:
    out = tmp_path / "out"
    prepare(corpus, out, options())
    before = snapshot(out)
    breakage(corpus)
    with pytest.raises(UserError):
        prepare(corpus, out, options())
    assert snapshot(out) == before
    assert load_prepared(out).chunks("train").shape[1] == CHUNK


# --- command line -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TINYMINDS_QUIET"}
    return subprocess.run(
        [sys.executable, "-m", "tinyminds", "prepare", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_prepare(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(str(corpus), "--out", str(out), "--vocab-size", str(VOCAB), "-q")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    manifest = read_json(out / "manifest.json")
    assert manifest["tokenizer"]["vocab_size"] == VOCAB
    assert manifest["splits"]["train"]["chunk_size"] == 128
    assert f"prepared {corpus} -> {out} (babylm-2024 layout" in result.stdout
    for split in ("train", "dev"):
        entry = manifest["splits"][split]
        assert re.search(
            rf"{split}\s+{entry['words']:,} words\s+{entry['tokens']:,} tokens\s+"
            rf"{entry['chunks']:,} chunks of 128",
            result.stdout,
        ), result.stdout
    assert manifest["tokenizer"]["hash"][:12] in result.stdout


def test_cli_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli(str(missing), "--out", str(tmp_path / "out"), "-q")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tinyminds prepare: error:")
    assert str(missing) in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
