"""The paper's published scores, as data, and how a results file's model is matched to them.

Numbers in percent, from Yam & Paek, "Teaching Tiny Minds" (BabyLM 2024): Table 2 (the distilled
models), Table 3 (teachers and baselines) and Table 4 (GLUE, DistilledGPT-44M vs BabyLlama-58M;
Table 4 writes "DistilledGPT-48M" for the same model), as SPEC §4 lists them. BLiMP is the filtered
BLiMP. SPEC §4 also records an independent re-run of DistilledGPT-44M; it is kept as a second
reference for that model.

Matching (`match_published`): a name is compared with the paper's names ignoring case and every
character that is not a letter or a digit (``distilledgpt-44m``, ``DistilledGPT_44M`` and
``DistilledGPT-44M`` are the same). The model's recipe (``tinyminds.json`` of a tinyminds model
folder, recorded in the results file) is tried first, then its name, then the name's leading
parts, split at ``-``, ``_``, ``.`` or spaces (``gpt2-44m-seed42`` is GPT2-44M). A recipe that
only shares an architecture with a paper model (``llama-58m`` is BabyLlama-58M's student
architecture trained without teachers) matches nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PAPER = 'Yam & Paek, "Teaching Tiny Minds" (BabyLM 2024)'


@dataclass(frozen=True)
class PublishedScores:
    """One model's published scores (percent) and where they come from."""

    model: str
    """The model as the paper names it."""
    source: str
    scores: dict[str, float]
    """Task -> score: ``blimp`` (filtered), ``supplement``, ``ewok``; ``glue`` is the macro
    average over the 9 GLUE tasks other than CoLA, as the paper reports it."""
    glue: dict[str, float] = field(default_factory=dict)
    """GLUE task -> score: F1 for MRPC and QQP, MCC for CoLA (as printed: -0.01 and 2.2),
    accuracy otherwise."""
    aliases: tuple[str, ...] = ()
    """Other spellings of the name in the paper."""
    label: str = "paper"
    """Column label suffix in tables: ``DistilledGPT-44M (paper)``."""

    @property
    def column(self) -> str:
        return f"{self.model} ({self.label})"


def _zero_shot(blimp: float, supplement: float, ewok: float) -> dict[str, float]:
    return {"blimp": blimp, "supplement": supplement, "ewok": ewok}


TABLE_2 = f"{PAPER}, Table 2"
TABLE_3 = f"{PAPER}, Table 3"
TABLES_2_4 = f"{PAPER}, Tables 2-4"

PUBLISHED: tuple[PublishedScores, ...] = (
    PublishedScores(
        "DistilledGPT-44M",
        TABLES_2_4,
        {**_zero_shot(66.8, 58.8, 50.0), "glue": 68.8},
        glue={
            "mrpc": 80.9,
            "rte": 55.4,
            "multirc": 64.9,
            "qqp": 75.1,
            "qnli": 77.4,
            "wsc": 57.7,
            "mnli": 66.9,
            "sst2": 75.9,
            "boolq": 65.3,
            "cola": -0.01,
        },
        aliases=("DistillGPT-44M", "DistilledGPT-48M"),
    ),
    PublishedScores(
        "DistilledGPT-44M",
        "an independent re-run of the paper's recipe (SPEC §4)",
        _zero_shot(65.8, 58.8, 50.0),
        aliases=("DistillGPT-44M", "DistilledGPT-48M"),
        label="re-run",
    ),
    PublishedScores(
        "BabyLlama-58M",
        TABLES_2_4,
        {**_zero_shot(69.8, 59.5, 50.7), "glue": 68.9},
        glue={
            "mrpc": 82.0,
            "rte": 49.6,
            "multirc": 60.1,
            "qqp": 83.6,
            "qnli": 82.8,
            "wsc": 38.5,
            "mnli": 72.4,
            "sst2": 86.2,
            "boolq": 65.0,
            "cola": 2.2,
        },
    ),
    PublishedScores("ContrastiveLlama-58M", TABLE_2, _zero_shot(68.5, 59.3, 50.0)),
    PublishedScores(
        "MaskedAdversarialLlama-58M",
        TABLE_2,
        _zero_shot(65.9, 56.8, 49.6),
        aliases=("MaskedAdverserialLlama-58M",),  # the paper's Table 2 spelling
    ),
    PublishedScores("GPT2-18M", TABLE_3, _zero_shot(63.7, 55.9, 49.7)),
    PublishedScores("GPT2-44M", TABLE_3, _zero_shot(65.6, 58.2, 50.4)),
    PublishedScores("GPT2-97M", TABLE_3, _zero_shot(66.0, 58.0, 50.6)),
    PublishedScores("GPT2-705M", TABLE_3, _zero_shot(66.1, 56.7, 50.6)),
    PublishedScores("Llama-20M", TABLE_3, _zero_shot(62.8, 56.6, 50.2)),
    PublishedScores("Llama-60M", TABLE_3, _zero_shot(63.5, 56.7, 49.6)),
    PublishedScores("Llama-360M", TABLE_3, _zero_shot(68.2, 55.1, 50.5)),
    PublishedScores("LTG-BERT", TABLE_3, _zero_shot(60.6, 60.8, 48.9)),
)


BASELINES_2025_SOURCE = (
    "BabyLM 2025 evaluation pipeline README, strict-small baselines, causal backend (SPEC-2025 §7; "
    "the organisers' figures, full evaluation)"
)
BASELINES_2025: tuple[PublishedScores, ...] = tuple(
    PublishedScores(
        model,
        BASELINES_2025_SOURCE,
        {
            "blimp": blimp,
            "supplement": supplement,
            "ewok": ewok,
            "reading": eye_tracking,
            "self_paced_reading": self_paced,
            "entity_tracking": entity_tracking,
            "wug_adj": wug,
        },
        label="2025 baseline",
    )
    for model, blimp, supplement, ewok, eye_tracking, self_paced, entity_tracking, wug in (
        ("GPT-BERT causal 31M", 71.66, 63.21, 49.49, 9.89, 3.45, 33.96, 43.0),
        ("GPT-2 small", 67.29, 59.09, 49.80, 0.13, 0.04, 18.92, 39.0),
    )
)
"""The 2025 strict-small baselines, shown beside every comparison of 2025-convention results
(``reading`` is the eye-tracking score, R^2 improvement x 100; ``wug_adj`` is Spearman's rho x
100; the rest accuracies in %)."""


def normalize(name: str) -> str:
    """``DistilledGPT-44M`` -> ``distilledgpt44m``: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _names(entry: PublishedScores) -> set[str]:
    return {normalize(name) for name in (entry.model, *entry.aliases)}


def _lookup(name: str) -> list[PublishedScores]:
    key = normalize(name)
    return [entry for entry in PUBLISHED if key and key in _names(entry)]


def match_published(name: str, recipe: str | None = None) -> list[PublishedScores]:
    """The published references for a model (see the module's docstring); [] when none match."""
    if recipe and (found := _lookup(recipe)):
        return found
    if found := _lookup(name):
        return found
    parts = [part for part in re.split(r"[-_.\s]+", name) if part]
    for end in range(len(parts) - 1, 0, -1):  # the longest leading run of parts first
        if found := _lookup("-".join(parts[:end])):
            return found
    return []
