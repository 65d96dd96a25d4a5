"""Exposure accounting: the words a model and the models it learned from have seen.

BabyLM limits exposure, not only data: the 2025 strict-small track allows 100M words seen
("total count not unique", SPEC-2025 §5), and the training data of ancillary models counts
towards the data budget. Whether a teacher's own training passes count against the student's
exposure is not settled (SPEC-2025 §5), so both the student's words and the total with its
teachers' (and generator's) are reported, each against the limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STRICT_SMALL_WORDS = 100_000_000
"""The BabyLM 2025 strict-small exposure limit: 100M words seen, repeats counted."""


def model_words(folder: Path) -> int | None:
    """Words seen by the model exported in ``folder`` (its ``tinyminds.json``), or None when the
    folder does not say (a model from elsewhere, or exported before tinyminds recorded it)."""
    try:
        info = json.loads((folder / "tinyminds.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    words = info.get("words_seen") if isinstance(info, dict) else None
    return words if isinstance(words, int) else None


def exposure_record(
    student_words: int, teachers: dict[str, int | None], generator: dict[str, int | None]
) -> dict[str, Any]:
    """The exposure of a distilled student: its words, its teachers' and generator's, the total,
    and whether each stays within the strict-small limit (None where a model's words are unknown)."""
    others = {**teachers, **generator}
    unknown = [name for name, words in others.items() if words is None]
    total = student_words + sum(words for words in others.values() if words is not None)
    return {
        "student_words": student_words,
        "teachers": teachers,
        "generator": generator,
        "total_words": None if unknown else total,
        "unknown": unknown,
        "limit_words": STRICT_SMALL_WORDS,
        "student_within_limit": student_words <= STRICT_SMALL_WORDS,
        "total_within_limit": None if unknown else total <= STRICT_SMALL_WORDS,
        "note": "whether teachers' training passes count against a student's exposure is not "
        "settled by the BabyLM 2025 rules; both are given",
    }


def describe(record: dict[str, Any]) -> str:
    """One line for a run's summary."""
    million = 1e6
    total = record["total_words"]
    within = {True: "within", False: "over", None: "unknown against"}
    return (
        f"words seen: student {record['student_words'] / million:.2f}M "
        f"({within[record['student_within_limit']]} the 100M strict-small limit); with its "
        + (
            f"teachers' training {total / million:.2f}M ({within[record['total_within_limit']]} it)"
            if total is not None
            else f"teachers' training: unknown for {', '.join(record['unknown'])}"
        )
    )
