"""Per-source text cleaning for BabyLM-style corpora.

Each corpus file is named after its source (``childes.train`` -> ``childes``), and each source has
its own quirks: transcripts with spaces before punctuation, Wikipedia dumps with
``= = = Title = = =`` headings, subtitle files with credit lines, all-caps educational-video
subtitles (QED). This module applies one small, documented rule per source, in the spirit of
BabyLlama's per-source cleaning but without its bugs: BabyLlama deleted every blank line (gluing
documents together) and dropped the first character of Wikipedia text. Here blank lines are
document boundaries and are always kept, and no text is ever lost except what a rule below
explicitly removes.

Every rule first normalises line endings (``\\r\\n`` and ``\\r`` become ``\\n``), then works line
by line, and the output keeps a trailing newline if and only if the input had one. "Whitespace"
below means space, tab and no-break space (U+00A0), never a newline: only the ``wikipedia`` rule
adds line breaks and only the ``open_subtitles`` rule removes lines.

Rules (the name is what :func:`cleaning_rule` returns, for the manifest):

``spaces`` (bnc_spoken, childes, aochildes)
    Collapse each run of whitespace to one space, then drop a space directly before any of
    ``. , ; ! ?`` ("hello , world ." -> "hello, world."). Transcripts tokenise punctuation apart.

``cbt`` (cbt)
    The ``spaces`` rule, then rejoin split contractions: a space between a word character and an
    apostrophe (``'`` or ``’``) that is followed by a word character is dropped ("Tom 's" ->
    "Tom's"). Only that: "is n't" stays as it is, since the space there is not before the
    apostrophe.

``open_subtitles`` (open_subtitles)
    Drop every line that contains "subtitle" in any case (credit lines such as "Subtitles by ..."),
    the whole line with its newline, so no blank line is left behind.

``wikipedia`` (wikipedia, simple_wikipedia, simple_wiki)
    Turn headings ``= = = Title = = =`` into the plain title on its own line. In the real data
    headings are mostly glued to the text around them ("... end. = = = Confetti = = = Confetti
    are ..."), so a line is split around each heading: text before it, the title, and text after
    it each become their own line. This is done by treating every run of two or more ``=``
    separated by single spaces, standing between whitespace or line ends, as a heading marker:
    the marker and the whitespace around it are replaced by a line break. For a well-formed
    heading that is exactly "the title on its own line", and it also cleans the malformed ones
    found in real files, which pairing opening and closing markers would miss: headings whose
    title was split over two lines ("= = = William G." / "Batchelder = = = William ..."), and
    headings cut in half where random snippets were joined. Pieces that are empty are not
    emitted, so splitting never creates blank lines (a line holding nothing but markers
    disappears instead of becoming a false document boundary), and no other character is dropped.
    A level-1 heading ``= Title =`` is recognised only when it is the whole line, because inline
    " = ... = " is everywhere in real equations, code and tables ("GP = Games played, W = Wins")
    and must not be mistaken for a heading.

``qed`` (qed)
    Fix mostly-uppercase lines (QED subtitles are often all caps). For each line, the "body" is the
    line without parenthesised parts (``(LAUGHTER)``) and without ``. ! ?``. If the body has letters
    and at least half of its *letters* are uppercase, the line is fixed: every ``l`` becomes ``I``
    (in all-caps text a lowercase ``l`` is an OCR/typing stand-in for ``I``, as in "lT'S"), then
    each sentence is put in sentence case with ``str.capitalize`` after splitting on ``[.!?]``
    plus the whitespace after it. BabyLlama compared uppercase characters to *all* characters of
    the body, so spaces and digits pulled the fraction down and long all-caps lines with numbers
    escaped the fix; counting letters only is more robust. Note that ``capitalize`` lowercases
    everything after a sentence's first character, so the ``l`` -> ``I`` replacement only shows
    where it starts a sentence ("lT'S ME." -> "It's me.") and a mid-sentence pronoun "I" becomes
    "i" ("YES l DO." -> "Yes i do."); a piece that starts with a quote or bracket keeps its first
    letter lowercase. All lines, fixed or not, lose trailing whitespace; nothing else changes.

``unchanged`` (gutenberg, switchboard, children_stories)
    Only the line-ending normalisation: these sources are already clean.

``generic`` (any other source)
    Collapse each run of whitespace to one space and strip trailing whitespace at line ends.
    Nothing else, so unknown data is never damaged by a rule written for another corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_WHITESPACE_RUN = re.compile(r"[ \t\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(" (?=[.,;!?])")
# Space/tab/NBSP between a word character and an apostrophe that starts a word: "Tom 's".
_SPLIT_APOSTROPHE = re.compile(r"(?<=\w)[ \t\u00a0](?=['’]\w)")
# A heading marker (level >= 2: "= =", "= = =", ...) between whitespace or line ends, together
# with the spaces, tabs and NBSPs around it, which the line break that replaces it makes redundant.
_HEADING_MARKER = re.compile(r"[ \t\u00a0]*(?<!\S)=(?: =)+(?!\S)[ \t\u00a0]*")
# A level-1 heading that is the whole line: "= Title =", the title without "=".
_LEVEL1_HEADING_LINE = re.compile(r"[ \t\u00a0]*= ([^\s=](?:[^=]*[^\s=])?) =[ \t\u00a0]*")
_PARENTHESISED = re.compile(r"\(.*?\)")
_SENTENCE_END = re.compile(r"[.!?]")
_SENTENCE_SPLIT = re.compile(r"([.!?]\s*)")

_LineRule = Callable[[str], list[str]]
"""A rule maps one line (without its newline) to the lines that replace it: none, one or more."""


def _collapse_whitespace(line: str) -> str:
    """Collapse runs of space, tab and NBSP to one space (shared by several rules)."""
    return _WHITESPACE_RUN.sub(" ", line)


def _rule_spaces(line: str) -> list[str]:
    """Transcripts: one space between tokens and none before ``.,;!?``."""
    return [_SPACE_BEFORE_PUNCT.sub("", _collapse_whitespace(line))]


def _rule_cbt(line: str) -> list[str]:
    """Children's Book Test: the ``spaces`` rule plus rejoined contractions ("Tom 's")."""
    (spaced,) = _rule_spaces(line)
    return [_SPLIT_APOSTROPHE.sub("", spaced)]


def _rule_open_subtitles(line: str) -> list[str]:
    """Subtitles: drop credit lines mentioning "subtitle" (any case), keep everything else."""
    return [] if "subtitle" in line.lower() else [line]


def _rule_wikipedia(line: str) -> list[str]:
    """Wikipedia: heading markers become line breaks, leaving each title on its own line."""
    level1 = _LEVEL1_HEADING_LINE.fullmatch(line)
    if level1 is not None:
        return [level1.group(1)]
    pieces = _HEADING_MARKER.split(line)
    if len(pieces) == 1:
        return [line]
    return [piece for piece in pieces if piece]


def _is_mostly_uppercase(line: str) -> bool:
    """Whether at least half the letters of the line's body (no ``(...)``, no ``.!?``) are caps."""
    body = _SENTENCE_END.sub("", _PARENTHESISED.sub("", line))
    letters = [char for char in body if char.isalpha()]
    if not letters:
        return False
    return 2 * sum(char.isupper() for char in letters) >= len(letters)


def _rule_qed(line: str) -> list[str]:
    """QED transcripts: mostly-uppercase lines get ``l`` -> ``I`` and sentence case."""
    line = line.rstrip()
    if line and _is_mostly_uppercase(line):
        line = line.replace("l", "I")
        line = "".join(piece.capitalize() for piece in _SENTENCE_SPLIT.split(line))
    return [line]


def _rule_unchanged(line: str) -> list[str]:
    """Sources that are already clean: the line as it is."""
    return [line]


def _rule_generic(line: str) -> list[str]:
    """Unknown sources: only whitespace tidying, which cannot damage any text."""
    return [_collapse_whitespace(line).rstrip()]


_RULES: dict[str, _LineRule] = {
    "spaces": _rule_spaces,
    "cbt": _rule_cbt,
    "open_subtitles": _rule_open_subtitles,
    "wikipedia": _rule_wikipedia,
    "qed": _rule_qed,
    "unchanged": _rule_unchanged,
    "generic": _rule_generic,
}
"""Rule name -> the function that applies it to one line."""

SOURCE_RULES: dict[str, str] = {
    "bnc_spoken": "spaces",
    "childes": "spaces",
    "aochildes": "spaces",
    "cbt": "cbt",
    "open_subtitles": "open_subtitles",
    "wikipedia": "wikipedia",
    "simple_wikipedia": "wikipedia",
    "simple_wiki": "wikipedia",
    "qed": "qed",
    "gutenberg": "unchanged",
    "switchboard": "unchanged",
    "children_stories": "unchanged",
}
"""Source name -> rule name; a source not listed here gets the ``generic`` rule."""


def source_name(path_stem: str) -> str:
    """Normalise a file stem to a source name, so "Childes" and "childes" clean the same way.

    The stem is stripped and lowercased, and hyphens and spaces become underscores
    ("Simple-Wiki" -> "simple_wiki"), matching the names in :data:`SOURCE_RULES`.
    """
    return re.sub(r"[-\s]+", "_", path_stem.strip().lower())


def cleaning_rule(source: str) -> str:
    """The name of the rule :func:`clean_text` applies to ``source``, recorded in the manifest."""
    return SOURCE_RULES.get(source_name(source), "generic")


def clean_text(source: str, text: str) -> str:
    """Clean the whole text of one file of ``source`` with that source's rule.

    Line endings are normalised first; blank lines (document boundaries) are kept, and the
    result ends with a newline exactly when the input did.
    """
    rule = _RULES[cleaning_rule(source)]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        return text
    has_final_newline = text.endswith("\n")
    body = text[:-1] if has_final_newline else text
    lines = [cleaned for line in body.split("\n") for cleaned in rule(line)]
    if not lines:
        return ""
    return "\n".join(lines) + ("\n" if has_final_newline else "")
