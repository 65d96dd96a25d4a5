"""Tests for the per-source cleaning rules in `tinyminds.data.cleaning`.

Each rule gets small literal inputs with exact expected outputs, so a change in behaviour shows up
as a readable diff; one test also runs the Wikipedia rule on a real file when the shared data is
there, because real headings are messier than anything written by hand.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from tinyminds.data.cleaning import SOURCE_RULES, clean_text, cleaning_rule, source_name

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "babylm-mini.tar.gz"
SIMPLE_WIKI_MEMBER = "babylm-mini/train/simple_wiki.train"

SPACES_SOURCES = ["bnc_spoken", "childes", "aochildes"]
WIKIPEDIA_SOURCES = ["wikipedia", "simple_wikipedia", "simple_wiki"]
UNCHANGED_SOURCES = ["gutenberg", "switchboard", "children_stories"]
ALL_SOURCES = [*SOURCE_RULES, "some_new_corpus"]


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("Childes", "childes"),
        ("childes", "childes"),
        ("BNC_Spoken", "bnc_spoken"),
        ("  QED ", "qed"),
        ("Simple-Wiki", "simple_wiki"),
        ("open subtitles", "open_subtitles"),
    ],
)
def test_source_name_normalises_stems(stem: str, expected: str) -> None:
    assert source_name(stem) == expected


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("bnc_spoken", "spaces"),
        ("childes", "spaces"),
        ("aochildes", "spaces"),
        ("cbt", "cbt"),
        ("open_subtitles", "open_subtitles"),
        ("wikipedia", "wikipedia"),
        ("simple_wikipedia", "wikipedia"),
        ("simple_wiki", "wikipedia"),
        ("qed", "qed"),
        ("gutenberg", "unchanged"),
        ("switchboard", "unchanged"),
        ("children_stories", "unchanged"),
        ("some_new_corpus", "generic"),
        ("", "generic"),
    ],
)
def test_cleaning_rule_names(source: str, rule: str) -> None:
    assert cleaning_rule(source) == rule


def test_cleaning_rule_accepts_unnormalised_names() -> None:
    """A stem straight from a file name picks the same rule as its normalised form."""
    assert cleaning_rule("Childes") == "spaces"
    assert cleaning_rule("Simple-Wiki") == "wikipedia"


# --- rules for every source ------------------------------------------------------------------


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_blank_lines_are_kept_as_document_boundaries(source: str) -> None:
    """BabyLlama deleted blank lines and glued documents together; every rule here keeps them."""
    text = "First document.\n\nSecond document.\n\n\nThird document.\n"
    assert clean_text(source, text) == text


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_crlf_and_cr_become_lf(source: str) -> None:
    assert clean_text(source, "One.\r\nTwo.\rThree.\r\n") == "One.\nTwo.\nThree.\n"


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_trailing_newline_is_kept_only_if_present(source: str) -> None:
    assert clean_text(source, "Hello.\nBye.\n") == "Hello.\nBye.\n"
    assert clean_text(source, "Hello.\nBye.") == "Hello.\nBye."


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_empty_text_stays_empty(source: str) -> None:
    assert clean_text(source, "") == ""


# --- spaces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SPACES_SOURCES)
def test_spaces_rule_collapses_whitespace_and_drops_space_before_punctuation(source: str) -> None:
    text = "*CHI:  more\t\tjuice\u00a0 , please ?\nyes ; no ! ok .\n\nthe end .\n"
    expected = "*CHI: more juice, please?\nyes; no! ok.\n\nthe end.\n"
    assert clean_text(source, text) == expected


@pytest.mark.parametrize("source", SPACES_SOURCES)
def test_spaces_rule_leaves_apostrophes_and_other_punctuation(source: str) -> None:
    """Only cbt rejoins contractions; colons, quotes and dashes are never touched."""
    text = 'Tom \'s ball : yes - " no " ( maybe )'
    assert clean_text(source, text) == text


# --- cbt -------------------------------------------------------------------------------------


def test_cbt_applies_spaces_rule_and_rejoins_split_apostrophes() -> None:
    text = "Tom  's hat , and the  dog ’s bone .\n\nIt is n't mine !\n"
    expected = "Tom's hat, and the dog’s bone.\n\nIt is n't mine!\n"
    assert clean_text("cbt", text) == expected


def test_cbt_keeps_apostrophes_that_do_not_start_a_word() -> None:
    """A quote mark after a space, or a leading apostrophe, is not a split contraction."""
    text = "the boys ' game\n'Tis so , said he ' twice"
    expected = "the boys ' game\n'Tis so, said he ' twice"
    assert clean_text("cbt", text) == expected


# --- open_subtitles --------------------------------------------------------------------------


def test_open_subtitles_drops_lines_mentioning_subtitles_in_any_case() -> None:
    text = "Hello there.\nSubtitles by the Team\nsync and SUBTITLE fix\nBye.\n\nNext film.\n"
    assert clean_text("open_subtitles", text) == "Hello there.\nBye.\n\nNext film.\n"


def test_open_subtitles_leaves_no_blank_line_behind() -> None:
    assert clean_text("open_subtitles", "Subtitles: someone\nHello.\n") == "Hello.\n"
    assert clean_text("open_subtitles", "Hello.\nSubtitles: someone\n") == "Hello.\n"
    assert clean_text("open_subtitles", "Hello.\nSubtitles: someone") == "Hello."
    assert clean_text("open_subtitles", "Downloaded subtitles\n") == ""


def test_open_subtitles_changes_nothing_else() -> None:
    text = "  Hi ,   you !  \n"
    assert clean_text("open_subtitles", text) == text


# --- wikipedia -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", WIKIPEDIA_SOURCES)
def test_wikipedia_heading_line_becomes_title(source: str) -> None:
    text = "= = = Confetti = = =\nConfetti are small pieces of paper.\n"
    assert clean_text(source, text) == "Confetti\nConfetti are small pieces of paper.\n"


@pytest.mark.parametrize("source", WIKIPEDIA_SOURCES)
def test_wikipedia_keeps_first_character(source: str) -> None:
    """BabyLlama dropped the first character of the text; plain text must come back whole."""
    text = "Anarchism is a political philosophy.\nIt has many forms."
    assert clean_text(source, text) == text


def test_wikipedia_inline_heading_is_split_onto_its_own_line() -> None:
    text = "= = = Confetti = = = Confetti are small pieces of paper.\n"
    assert clean_text("simple_wiki", text) == "Confetti\nConfetti are small pieces of paper.\n"


def test_wikipedia_text_before_an_inline_heading_keeps_its_own_line() -> None:
    text = "They throw it at parties. = = = Confetti = = = Confetti are small.\n\nNext article.\n"
    expected = "They throw it at parties.\nConfetti\nConfetti are small.\n\nNext article.\n"
    assert clean_text("simple_wiki", text) == expected


def test_wikipedia_headings_of_other_levels_and_back_to_back() -> None:
    assert clean_text("wikipedia", "= = History = =") == "History"
    assert clean_text("wikipedia", "= Anarchism =") == "Anarchism"
    assert clean_text("wikipedia", "= = = A = = = = = = B = = = Text.") == "A\nB\nText."
    assert clean_text("wikipedia", "= = = 1 + 1 = 2 = = =") == "1 + 1 = 2"


def test_wikipedia_heading_split_over_two_lines() -> None:
    """Real files split some titles at an abbreviation; the markers go, every word stays."""
    text = "He died.\n= = = William G.\nBatchelder = = = William George Batchelder was a judge.\n"
    expected = "He died.\nWilliam G.\nBatchelder\nWilliam George Batchelder was a judge.\n"
    assert clean_text("simple_wiki", text) == expected


def test_wikipedia_never_creates_blank_lines() -> None:
    """A line of markers alone disappears: turning it blank would invent a document boundary."""
    assert clean_text("simple_wiki", "Text.\n= = =\nMore.\n") == "Text.\nMore.\n"
    assert clean_text("simple_wiki", "  = = = Title = = =  \n") == "Title\n"


def test_wikipedia_leaves_equations_and_single_equals_alone() -> None:
    """A level-1 heading counts only as a whole line: inline " = x = " is usually maths or code."""
    text = 'Note: GP = Games played, W = Wins\nx = 5 = y\n"a" = "b"\n'
    assert clean_text("simple_wiki", text) == text


# --- qed -------------------------------------------------------------------------------------


def test_qed_all_caps_line_gets_sentence_case() -> None:
    assert clean_text("qed", "HELLO WORLD. HOW ARE YOU?\n") == "Hello world. How are you?\n"


def test_qed_replaces_l_by_capital_i_before_casing() -> None:
    """In caps text "l" stands for "I": it is replaced first, then `capitalize` lowercases all but
    each sentence's first letter, so a sentence-initial "lT'S" becomes "It's" (not "Lt's") while a
    mid-sentence pronoun ends up as "i"."""
    assert clean_text("qed", "lT'S A TEST. YES l DO!") == "It's a test. Yes i do!"


def test_qed_mixed_case_lines_only_lose_trailing_whitespace() -> None:
    text = "Hello World, I am here.   \nNo numbers 123 (AND SOME CAPS) here.\t\n\nlowercase line\n"
    expected = "Hello World, I am here.\nNo numbers 123 (AND SOME CAPS) here.\n\nlowercase line\n"
    assert clean_text("qed", text) == expected


def test_qed_decides_on_letters_not_characters() -> None:
    """Digits and spaces do not dilute the uppercase share: 2 of 2 letters are caps here."""
    assert clean_text("qed", "HI 2023 12345 67890!") == "Hi 2023 12345 67890!"


def test_qed_ignores_parenthesised_parts_when_deciding() -> None:
    assert clean_text("qed", "(APPLAUSE) Thank you all.") == "(APPLAUSE) Thank you all."
    # Half the letters uppercase is enough ("ABcd": 2 of 4).
    assert clean_text("qed", "ABcd") == "Abcd"


def test_qed_lines_without_letters_are_unchanged() -> None:
    assert clean_text("qed", "12:30 -- 45 ...\n") == "12:30 -- 45 ...\n"


# --- unchanged and generic -------------------------------------------------------------------


@pytest.mark.parametrize("source", UNCHANGED_SOURCES)
def test_unchanged_sources_keep_everything(source: str) -> None:
    text = "  Keep\t\tthis ,  as is .  \n\n= = = Not a heading here = = =\nSubtitle line\n"
    assert clean_text(source, text) == text


def test_unknown_source_gets_generic_cleaning() -> None:
    text = "some\t\u00a0 text  ,  here   \n   \n\nnext ."
    expected = "some text , here\n\n\nnext ."
    assert clean_text("some_new_corpus", text) == expected
    assert clean_text("Some_New_Corpus", text) == expected


# --- real data -------------------------------------------------------------------------------


def _word_count(text: str) -> int:
    """Whitespace-separated tokens with a letter or digit in them: "=" markup is not a word."""
    return sum(1 for token in text.split() if re.search(r"\w", token))


def test_simple_wiki_real_file(tmp_path: Path) -> None:
    """On real data: no heading markers left, words kept, and lines only ever added by splits."""
    if not ARCHIVE.is_file():
        pytest.skip(f"../shared/data/babylm-mini.tar.gz not found: {ARCHIVE} (no shared data here)")
    target = tmp_path / "simple_wiki.train"
    with tarfile.open(ARCHIVE) as archive:
        source_file = archive.extractfile(SIMPLE_WIKI_MEMBER)
        assert source_file is not None
        target.write_bytes(source_file.read())
    original = target.read_text(encoding="utf-8")

    cleaned = clean_text("simple_wiki", original)

    assert "= = =" in original  # the test would prove nothing otherwise
    assert "= = =" not in cleaned
    before, after = _word_count(original), _word_count(cleaned)
    assert abs(after - before) < 0.01 * before
    original_lines, cleaned_lines = original.split("\n"), cleaned.split("\n")
    assert len(cleaned_lines) >= len(original_lines)
    blank = [line for line in original_lines if not line.strip()]
    assert [line for line in cleaned_lines if not line.strip()] == blank
    # Apart from "=" and whitespace, every character survives, in order (the first one included).
    assert re.sub(r"[=\s]", "", cleaned) == re.sub(r"[=\s]", "", original)
