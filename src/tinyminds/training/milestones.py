"""Word-milestone checkpoints: model folders saved as the words seen pass set counts.

The BabyLM 2025 pipeline scores intermediate checkpoints named ``chck_{N}M``, saved when the
model has seen N million words (repeats counted): every 1M words up to 10M, then every 10M up to
100M (SPEC-2025 §3). The engine saves a Hugging Face folder ``RUN/milestones/chck_{N}M`` at the
first optimizer step whose words seen reach each milestone; its ``tinyminds.json`` records the
words actually seen then (a step holds many words, so it is at or just past N million).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MILESTONES_FOLDER = "milestones"
"""Where in a run folder the milestone model folders are saved."""

BABYLM_2025_MILLIONS: tuple[float, ...] = (*range(1, 10), *range(10, 101, 10))
"""The 2025 pipeline's schedule, in millions of words: 1M to 10M every 1M, then to 100M every 10M."""

_NAME = re.compile(r"chck_(\d+(?:\.\d+)?)M")


def milestone_words(schedule: str, custom_millions: list[float]) -> list[int]:
    """The milestones of ``schedule`` (none, babylm-2025, custom) in words, ascending, distinct."""
    if schedule == "none":
        return []
    millions = BABYLM_2025_MILLIONS if schedule == "babylm-2025" else custom_millions
    return sorted({round(m * 1_000_000) for m in millions})


def milestone_name(words: int) -> str:
    """``chck_{N}M`` with N in millions (``chck_1M``, ``chck_0.25M``), as the 2025 pipeline names."""
    return f"chck_{words / 1_000_000:g}M"


@dataclass(frozen=True)
class Milestone:
    """One saved milestone folder."""

    name: str
    """``chck_{N}M``."""
    folder: Path
    """The Hugging Face model folder."""
    milestone_words: int
    """N million: the milestone it was saved for."""
    words_seen: int | None
    """The words the model had seen when saved (its ``tinyminds.json``), None if unrecorded."""


def saved_milestones(run_dir: Path) -> list[Milestone]:
    """The milestone folders of ``run_dir`` (or of a ``milestones/`` folder given directly), in
    order of words; staging folders and other names are ignored."""
    folder = run_dir / MILESTONES_FOLDER if (run_dir / MILESTONES_FOLDER).is_dir() else run_dir
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _NAME.fullmatch(path.name)
        if not match or not path.is_dir():
            continue
        words: int | None = None
        try:
            info = json.loads((path / "tinyminds.json").read_text(encoding="utf-8"))
            words = info.get("words_seen") if isinstance(info, dict) else None
        except (OSError, ValueError):
            pass
        found.append(
            Milestone(
                path.name,
                path,
                round(float(match.group(1)) * 1_000_000),
                words if isinstance(words, int) else None,
            )
        )
    return sorted(found, key=lambda m: m.milestone_words)
