"""Reading the zero-shot tasks of the BabyLM 2024 ``evaluation_data/`` folder (SPEC §4).

Each task is a folder of JSONL files, one subtask per file, named after the file's stem:
``blimp_filtered/`` and ``supplement_filtered/`` (lines with ``sentence_good``, ``sentence_bad``)
and ``ewok_filtered/`` (lines with ``Context1``, ``Target1``, ``Target2``); other fields are ignored.
A data path may be the ``evaluation_data/`` folder holding those task folders, a task folder itself,
or single ``.jsonl`` files.

EWoK's terms forbid redistributing its items as text, so nothing here ever puts an item's text into
an error message: errors name the file, the line number and the field, never the content. Reading is
pure Python (no torch), so a bad file is reported before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tinyminds.errors import UserError


@dataclass(frozen=True)
class TaskFormat:
    """How one task's lines are read, and where its files live in ``evaluation_data/``."""

    folder: str
    """The task folder's name in the BabyLM 2024 layout."""
    fields: tuple[str, str, str | None]
    """Fields holding (good, bad, context); a context of None means the empty context, which the
    scorer replaces by the prefix token."""
    label: str
    """The task's name in tables."""


TASKS: dict[str, TaskFormat] = {
    "blimp": TaskFormat("blimp_filtered", ("sentence_good", "sentence_bad", None), "BLiMP"),
    "supplement": TaskFormat(
        "supplement_filtered", ("sentence_good", "sentence_bad", None), "BLiMP supplement"
    ),
    "ewok": TaskFormat("ewok_filtered", ("Target1", "Target2", "Context1"), "EWoK"),
    # The BabyLM 2025 fast sets (SPEC-2025 §2): subsets of the three above, same fields.
    "blimp_fast": TaskFormat("blimp_fast", ("sentence_good", "sentence_bad", None), "BLiMP fast"),
    "supplement_fast": TaskFormat(
        "supplement_fast", ("sentence_good", "sentence_bad", None), "BLiMP supplement fast"
    ),
    "ewok_fast": TaskFormat("ewok_fast", ("Target1", "Target2", "Context1"), "EWoK fast"),
}

OTHER_2025_TASKS = {
    "entity_tracking": "entity_tracking",
    "entity_tracking_fast": "entity_tracking_fast",
    "wug_adj": "wug_adj_nominalization",
    "reading": "reading",
}
"""The BabyLM 2025 zero-shot tasks that are not minimal pairs (`babylm2025`), with their folders
in the 2025 ``evaluation_data/`` layout."""

FILE_SUFFIX = {"reading": ".csv"}
"""A task's data files end in ``.jsonl`` unless named here."""

FOLDERS = {
    **{name: fmt.folder for name, fmt in TASKS.items()},
    **OTHER_2025_TASKS,
    "glue": "glue_filtered",
}
"""Every task `tinyminds evaluate` knows, with its folder in ``evaluation_data/``: the minimal-pair
tasks above, the other BabyLM 2025 tasks, and ``glue`` (fine-tuned with LoRA, read by
`glue_tasks`)."""

SUITES = {
    "babylm-2024": (["blimp", "supplement", "ewok"], "2024"),
    "babylm-2025": (
        ["blimp", "supplement", "ewok", "entity_tracking", "wug_adj", "reading"],
        "2025",
    ),
    "babylm-2025-fast": (
        [
            "blimp_fast",
            "supplement_fast",
            "ewok_fast",
            "entity_tracking_fast",
            "wug_adj",
            "reading",
        ],
        "2025",
    ),
}
"""`tinyminds evaluate --suite`: the tasks and the scoring convention of each pipeline's zero-shot
suite (the 2025 fast suite is the one its pipeline runs on every intermediate checkpoint)."""


@dataclass(frozen=True)
class Pair:
    """One minimal pair: ``good`` should score at least as high as ``bad`` after ``context``."""

    context: str
    """Empty for BLiMP and the supplement (the scorer then conditions on the prefix token)."""
    good: str
    bad: str


@dataclass
class Subtask:
    """One JSONL file: a BLiMP paradigm, a supplement task or an EWoK domain."""

    task: str
    name: str
    path: Path
    sha256: str
    """SHA-256 of the file's bytes, recorded with the results so that scores name their data."""
    pairs: list[Pair]


def parse_task_names(text: str) -> list[str]:
    """``"blimp,ewok"`` -> ``["blimp", "ewok"]`` (order kept, duplicates dropped) or a clear error.

    Known: the zero-shot tasks of `TASKS` and ``glue`` (fine-tuned, see `glue_tasks`).
    """
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in FOLDERS:
            raise UserError(f"unknown task {part.strip()!r}; known tasks: {', '.join(FOLDERS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise UserError(f"no task given; known tasks: {', '.join(FOLDERS)}")
    return names


def infer_task(path: Path) -> str | None:
    """The task a data file or folder holds, told from its first line's fields (or the CSV's
    header): what a folder's name does not say (``blimp_unfiltered/``). BLiMP's lines carry
    ``UID``/``field``, the supplement's only the two sentences. None when nothing matches."""
    if path.is_dir():
        candidates = sorted([*path.glob("*.jsonl"), *path.glob("*.csv")])
        if not candidates:
            return None
        path = candidates[0]
    try:
        with path.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix == ".csv":
        return "reading" if "RTfirstfix" in first.split(",") else None
    try:
        record = json.loads(first)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    fields = set(record)
    if {"Context1", "Target1", "Target2"} <= fields:
        return "ewok"
    if {"input_prefix", "options"} <= fields:
        return "entity_tracking"
    if {"sentences", "ratio"} <= fields:
        return "wug_adj"
    if {"sentence_good", "sentence_bad"} <= fields:
        return "blimp" if fields & {"UID", "field", "linguistics_term"} else "supplement"
    return None


def _inferred_as(path: Path, task: str) -> bool:
    """Whether ``path``'s fields say it is ``task``'s data (a fast set is its full task's kind)."""
    inferred = infer_task(path)
    return inferred is not None and task.removesuffix("_fast") == inferred


def task_files(task: str, paths: list[Path], only_task: bool, required: bool = True) -> list[Path]:
    """The JSONL files of ``task`` among ``paths``, sorted by name within each path.

    A path counts for ``task`` when it is a folder holding ``blimp_filtered/`` (say), a folder
    called ``blimp_filtered`` or ``blimp``, a ``.jsonl`` file inside such a folder, or a folder or
    file whose lines' fields are ``task``'s (`infer_task`). When only one task is evaluated
    (``only_task``), any folder of JSONL files and any ``.jsonl`` file is taken to be that task's.
    With ``required`` False, no data for ``task`` gives an empty list instead of an error.
    """
    task_folder = FOLDERS[task]
    suffix = FILE_SUFFIX.get(task, ".jsonl")
    names = (task_folder, task)
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir():
            if (path / task_folder).is_dir():
                folder = path / task_folder
            elif path.name in names or only_task or _inferred_as(path, task):
                folder = path
            else:
                continue
            found = sorted(folder.glob(f"*{suffix}"))
            if not found:
                inside = "" if folder.name in names else f" and no {task_folder}/ folder"
                raise UserError(f"{folder}: empty task folder (no {suffix} files{inside})")
            files.extend(found)
        elif path.parent.name in names or only_task or _inferred_as(path, task):
            if path.suffix != suffix:
                raise UserError(f"{path}: not a {suffix} file")
            files.append(path)
    if not files and required:
        shown = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no data for task {task} in {shown}: expected a folder {task_folder}/ "
            f"(as in BabyLM's evaluation_data/) or {suffix} files inside one"
        )
    return files


def check_paths_used(tasks: list[str], paths: list[Path]) -> None:
    """With several tasks, refuse a ``.jsonl`` file or folder that belongs to none of them."""
    if len(tasks) == 1:
        return
    for path in paths:
        names = {name for task in tasks for name in (task, FOLDERS[task])}
        holds_task = path.is_dir() and any((path / FOLDERS[t]).is_dir() for t in tasks)
        owner = path.name if path.is_dir() else path.parent.name
        if not path.exists() or holds_task or owner in names:
            continue
        if any(_inferred_as(path, task) for task in tasks):
            continue  # its lines say which task it is
        inferred = infer_task(path)
        if inferred is not None:
            raise UserError(
                f"{path}: its lines are {inferred} data, which is not among the tasks asked for "
                f"({', '.join(tasks)}); add it to --tasks"
            )
        raise UserError(
            f"{path}: cannot tell which of {', '.join(tasks)} it belongs to (its lines have none "
            f"of their fields); put it in a folder named after the task (e.g. "
            f"{FOLDERS[tasks[0]]}/) or evaluate one task at a time"
        )


def read_subtask(task: str, path: Path) -> Subtask:
    """Read one JSONL file of ``task``; every problem is one line naming the file and line number."""
    good_field, bad_field, context_field = TASKS[task].fields
    needed = [f for f in (context_field, good_field, bad_field) if f is not None]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    pairs: list[Pair] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}: not UTF-8 text") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            # The message and column only: the line's text may be licensed (EWoK).
            raise UserError(
                f"{where}: malformed JSON ({error.msg}, column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got a {type(record).__name__}")
        for name in needed:
            if name not in record:
                raise UserError(
                    f"{where}: missing field {name!r} ({task} lines need {', '.join(needed)})"
                )
            if not isinstance(record[name], str):
                raise UserError(
                    f"{where}: field {name!r} is a {type(record[name]).__name__}, expected text"
                )
        context = record[context_field] if context_field else ""
        pairs.append(Pair(context, record[good_field], record[bad_field]))
    if not pairs:
        raise UserError(f"{path}: no items (an empty file)")
    return Subtask(task, path.stem, path, hashlib.sha256(data).hexdigest(), pairs)


def load_task(task: str, paths: list[Path], only_task: bool = False) -> list[Subtask]:
    """Every subtask of ``task`` found in ``paths``; two files with the same stem are an error."""
    subtasks = [read_subtask(task, path) for path in task_files(task, paths, only_task)]
    seen: dict[str, Path] = {}
    for subtask in subtasks:
        if subtask.name in seen:
            raise UserError(
                f"{subtask.path}: subtask {subtask.name!r} given twice (also {seen[subtask.name]})"
            )
        seen[subtask.name] = subtask.path
    return subtasks


def load_tasks(tasks: list[str], paths: list[Path]) -> dict[str, list[Subtask]]:
    """Read and check the data of every zero-shot task up front, so a bad file fails before any
    scoring. ``tasks`` may include ``glue``, whose folder then counts as used (`glue_tasks` reads it)."""
    check_paths_used(tasks, paths)
    only_task = len(tasks) == 1
    return {task: load_task(task, paths, only_task) for task in tasks if task in TASKS}


def tasks_with_data(tasks: list[str], paths: list[Path]) -> tuple[list[str], list[str]]:
    """(the tasks that have data among ``paths``, the ones that have none), in ``tasks``' order;
    for a default task list, where the tasks without data are skipped and named, not an error."""
    only_task = len(tasks) == 1
    present, missing = [], []
    for task in tasks:
        found = task == "glue" or bool(task_files(task, paths, only_task, required=False))
        (present if found else missing).append(task)
    return present, missing
