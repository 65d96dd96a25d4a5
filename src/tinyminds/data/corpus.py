"""Finding a corpus's files and reading them as cleaned text.

Three layouts are recognised: BabyLM 2024 (``train_10M/*.train``, ``dev/*.dev``), BabyLM 2023
(``babylm_10M/*.train``, ``babylm_dev/*.dev``) and any folder of ``.train``/``.dev``/``.txt`` files
(flat, or in ``train/`` and ``dev/`` subfolders). Files are read in sorted order so that the same
folder always gives the same token stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tinyminds.data.cleaning import clean_text, cleaning_rule, source_name
from tinyminds.errors import UserError

# (layout name, train folder, dev folder), tried in this order.
_LAYOUTS = (
    ("babylm-2024", "train_10M", "dev"),
    ("babylm-2023", "babylm_10M", "babylm_dev"),
    ("folder", "train", "dev"),
)
_TRAIN_SUFFIXES = (".train", ".txt")
_DEV_SUFFIXES = (".dev", ".txt")


@dataclass
class CorpusFiles:
    """The files of each split, and which layout they were found in."""

    layout: str
    train: list[Path]
    dev: list[Path]
    """Empty when the corpus has no dev files: the dev split is then held out of train."""


@dataclass
class SourceText:
    """One file's text after cleaning, with what the manifest records about it."""

    path: Path
    source: str
    rule: str
    lines: list[str]
    """Cleaned lines; an empty string is a document boundary (a blank line in the file)."""
    raw_sha256: str
    replaced_bytes: int = 0
    """Bytes that were not UTF-8 and became U+FFFD (only with ``encoding_errors="replace"``)."""

    @property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)

    @property
    def text_lines(self) -> int:
        return sum(1 for line in self.lines if line)

    @property
    def documents(self) -> int:
        """Runs of non-blank lines: blank lines (and file ends) separate documents."""
        count, inside = 0, False
        for line in self.lines:
            if line and not inside:
                count += 1
            inside = bool(line)
        return count

    def clean_sha256(self) -> str:
        digest = hashlib.sha256(f"{self.source}\0{self.rule}\0".encode())
        for line in self.lines:
            digest.update(line.encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes)


def find_corpus_files(corpus_dir: Path) -> CorpusFiles:
    """The train and dev files of ``corpus_dir``, or a one-line error saying what is missing."""
    if not corpus_dir.exists():
        raise UserError(f"corpus folder {corpus_dir} does not exist")
    if not corpus_dir.is_dir():
        raise UserError(f"corpus {corpus_dir} is not a folder")
    for layout, train_name, dev_name in _LAYOUTS:
        train_dir, dev_dir = corpus_dir / train_name, corpus_dir / dev_name
        if not train_dir.is_dir():
            continue
        train = _files(train_dir, _TRAIN_SUFFIXES)
        if not train:
            raise UserError(f"split 'train' has no .train or .txt files in {train_dir}")
        dev: list[Path] = []
        if dev_dir.is_dir():
            dev = _files(dev_dir, _DEV_SUFFIXES)
            if not dev:
                raise UserError(f"split 'dev' has no .dev or .txt files in {dev_dir}")
        return CorpusFiles(layout, train, dev)
    flat = [p for p in corpus_dir.iterdir() if p.is_file()]
    train = sorted(p for p in flat if p.suffix in _TRAIN_SUFFIXES)
    dev = sorted(p for p in flat if p.suffix == ".dev")
    if not train:
        raise UserError(
            f"corpus folder {corpus_dir} has no training text: expected train_10M/ (BabyLM 2024), "
            "babylm_10M/ (BabyLM 2023), train/, or .train/.txt files"
        )
    return CorpusFiles("folder", train, dev)


def read_source(path: Path, encoding_errors: str = "strict") -> SourceText:
    """Read and clean one corpus file.

    Bytes that are not UTF-8 are an error naming the file, line and byte offset, unless
    ``encoding_errors="replace"``, which turns each bad byte into U+FFFD and counts them.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    replaced = 0
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if encoding_errors != "replace":
            line = data[: error.start].count(b"\n") + 1
            raise UserError(
                f"{path}: not UTF-8 at line {line}, byte offset {error.start} "
                f"(byte 0x{data[error.start]:02x}); re-encode the file as UTF-8 or pass "
                "--encoding-errors replace"
            ) from None
        text = data.decode("utf-8", errors="replace")
        replaced = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
    if not text.strip():
        raise UserError(f"{path}: empty file; remove it from the corpus or give it text")
    source = source_name(path.stem)
    cleaned = clean_text(source, text)
    lines = [line.rstrip() for line in cleaned.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return SourceText(
        path=path,
        source=source,
        rule=cleaning_rule(source),
        lines=lines,
        raw_sha256=hashlib.sha256(data).hexdigest(),
        replaced_bytes=replaced,
    )


def hold_out(text: SourceText, fraction: float) -> tuple[SourceText, SourceText]:
    """Split one source into (train, dev) at a line boundary: the last ``fraction`` of its lines."""
    cut = max(1, min(len(text.lines) - 1, round(len(text.lines) * (1 - fraction))))
    # The file's replaced-byte count stays with its train part, so the split totals keep it.
    train = SourceText(
        text.path, text.source, text.rule, text.lines[:cut], text.raw_sha256, text.replaced_bytes
    )
    dev = SourceText(text.path, text.source, text.rule, text.lines[cut:], text.raw_sha256)
    return train, dev
