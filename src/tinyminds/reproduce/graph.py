"""A small content-addressed stage graph: run what is missing, reuse what is finished.

A `Stage` has a name, the names of the stages it reads (``deps``), a JSON-able ``spec`` (its
config) and a function. Its key is the SHA-256 of its spec and its dependencies' keys, so it
changes when the stage's own config changes or when anything upstream does, and only then. A
stage works in ``ROOT/stages/NAME-KEY/`` and is done when ``stage.json`` is in that folder: the
file is written (to a temporary name, then renamed) only after the stage's function returned, so an
interrupted or failed stage is never taken for a finished one, and its next run starts (or, for a
training run, resumes) in the same folder.

States, as `Graph.states` reports them:

- ``done``: ``stage.json`` exists for the current key;
- ``to run``: nothing yet (``partial`` when a folder from an interrupted try is there to resume);
- ``stale``: only folders of another key exist (an older config, or changed inputs): it reruns;
- ``unavailable``: the stage cannot run here (``Stage.unavailable`` says why); its dependants
  are skipped with that reason.

`Graph.run` runs stages in dependency order; a stage that fails (an exception) is reported with
one line, its dependants are skipped, every other stage still runs, and finished stages are never
touched. `Graph.unused_folders` lists the folders no current stage uses (``--prune`` deletes
them). `run_lock` refuses a second run in the same root (an ``fcntl`` lock on ``ROOT/.lock``).
Nothing here knows about models: the paper's grid is `tinyminds.reproduce.stages`.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from tinyminds.errors import UserError
from tinyminds.files import folder_lock, write_json_atomic

DONE_FILE = "stage.json"


@dataclass
class StageContext:
    """What a stage's function gets: its folder, and each dependency's folder and record."""

    name: str
    folder: Path
    inputs: dict[str, Path]
    records: dict[str, dict[str, Any]]
    """Dependency name -> the ``record`` its function returned (from its ``stage.json``)."""


@dataclass
class Stage:
    name: str
    deps: tuple[str, ...]
    spec: dict[str, Any]
    """Everything that decides the stage's output besides its inputs (hashed, JSON-able)."""
    run: Callable[[StageContext], dict[str, Any] | None]
    """Does the work in ``context.folder``; returns a JSON-able record kept in ``stage.json``."""
    unavailable: str | None = None
    """Why the stage cannot run (it and its dependants are skipped), or None."""
    group: str = ""
    """A label for listings (``teachers``, ``students``...)."""


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Stage -> one line saying why."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Stage -> why it did not run (unavailable, or a dependency that failed or was skipped)."""


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_key(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Start a new peak-resident-memory window for this process, so that `peak_rss_mib` reports
    one stage's own peak (stages share one process). Linux resets its high-water mark when "5" is
    written to ``/proc/self/clear_refs``; False where that is not possible (then the peak is the
    process's so far)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: since the last `reset_peak_rss` on Linux
    (``VmHWM``), else the whole process's (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Graph:
    """Stages in ``root/stages/``; see the module's docstring."""

    def __init__(self, stages: list[Stage], root: Path) -> None:
        self.stages = {stage.name: stage for stage in stages}
        if len(self.stages) != len(stages):
            raise ValueError("two stages share a name")
        self.root = root
        self.order = self._topological_order()
        self.keys: dict[str, str] = {}
        for name in self.order:
            stage = self.stages[name]
            deps = {dep: self.keys[dep] for dep in stage.deps}
            self.keys[name] = _hash({"spec": stage.spec, "deps": deps})

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise ValueError(f"the stage graph has a cycle through {name}")
            visiting.add(name)
            for dep in self.stages[name].deps:
                if dep not in self.stages:
                    raise ValueError(f"stage {name} depends on unknown stage {dep}")
                visit(dep)
            visiting.discard(name)
            order.append(name)

        for name in self.stages:  # the declaration order, where dependencies allow
            visit(name)
        return order

    def folder(self, name: str) -> Path:
        return self.root / "stages" / f"{name}-{self.keys[name][:16]}"

    def record(self, name: str) -> dict[str, Any] | None:
        """The ``stage.json`` of a finished stage (current key), else None."""
        path = self.folder(name) / DONE_FILE
        if not path.is_file():
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
        return document if document.get("key") == self.keys[name] else None

    def blocked_by(self, name: str) -> str | None:
        """The upstream stage that is unavailable, if any (``name`` cannot run then)."""
        for dep in self.stages[name].deps:
            if self.stages[dep].unavailable:
                return dep
            if (upstream := self.blocked_by(dep)) is not None:
                return upstream
        return None

    def state(self, name: str) -> str:
        if self.stages[name].unavailable:
            return "unavailable"
        if (upstream := self.blocked_by(name)) is not None:
            return f"blocked ({upstream} is unavailable)"
        if self.record(name) is not None:
            return "done"
        others = [
            path
            for path in (self.root / "stages").glob(f"{name}-*")
            if _is_key(path.name[len(name) + 1 :]) and (path / DONE_FILE).is_file()
        ]
        if self.folder(name).is_dir():
            return "partial"
        return "stale" if others else "to run"

    def unused_folders(self) -> list[Path]:
        """Stage folders under ``root/stages/`` that no stage of this graph uses: the outputs of
        older configs or inputs, of stages no longer in the graph, and their interrupted tries.
        Only ``NAME-KEY`` folders count; anything else there is left alone."""
        stages_dir = self.root / "stages"
        if not stages_dir.is_dir():
            return []
        used = {self.folder(name).name for name in self.order}
        return sorted(
            path
            for path in stages_dir.iterdir()
            if path.is_dir()
            and path.name not in used
            and path.name[-17:-16] == "-"
            and _is_key(path.name[-16:])
        )

    def states(self) -> dict[str, str]:
        return {name: self.state(name) for name in self.order}

    def select(self, patterns: list[str] | None) -> list[str]:
        """The stages to consider: all, or those matching ``patterns`` (names or shell-style
        patterns such as ``eval-*``) plus the dependencies they need that are not done yet."""
        if not patterns:
            return list(self.order)
        wanted: set[str] = set()
        for pattern in patterns:
            matched = [name for name in self.order if fnmatchcase(name, pattern)]
            if not matched:
                raise UserError(f"--only {pattern}: no such stage; stages: {', '.join(self.order)}")
            wanted.update(matched)
        needed: set[str] = set()

        def add(name: str) -> None:
            if name in needed:
                return
            needed.add(name)
            for dep in self.stages[name].deps:
                if self.record(dep) is None:
                    add(dep)

        for name in wanted:
            add(name)
        return [name for name in self.order if name in needed]

    def describe(self, selected: list[str] | None = None) -> str:
        """The graph as text: one line per stage with its state, key and dependencies."""
        selected = selected if selected is not None else self.order
        lines = []
        for name in selected:
            stage = self.stages[name]
            state = self.state(name)
            if state == "unavailable":
                state += f" ({stage.unavailable})"
            deps = f" <- {', '.join(stage.deps)}" if stage.deps else ""
            lines.append(f"  {name:32} {self.keys[name][:12]}  {state}{deps}")
        return "\n".join(lines)

    def run(
        self,
        selected: list[str] | None = None,
        on_start: Callable[[str, str], None] | None = None,
    ) -> RunSummary:
        """Run the ``selected`` stages (default all) in order; see the module's docstring.

        ``on_start(name, state)`` is called before each stage that runs (for status lines).
        Interrupts (Ctrl-C) propagate at once; the interrupted stage stays unfinished.
        """
        summary = RunSummary()
        blocked: dict[str, str] = {}
        for name in selected if selected is not None else self.order:
            stage = self.stages[name]
            failed_dep = next((dep for dep in stage.deps if dep in blocked), None)
            missing = [dep for dep in stage.deps if self.record(dep) is None]
            if stage.unavailable:
                why_not = stage.unavailable
            elif failed_dep is not None:
                why_not = f"needs {failed_dep}, which {blocked[failed_dep]}"
            elif missing:
                why_not = f"needs {', '.join(missing)}, not finished"
            else:
                why_not = None
            if why_not is not None:
                summary.skipped[name] = why_not
                blocked[name] = "did not run"
                continue
            if self.record(name) is not None:
                summary.reused.append(name)
                continue
            state = self.state(name)
            if on_start is not None:
                on_start(name, state)
            folder = self.folder(name)
            folder.mkdir(parents=True, exist_ok=True)
            context = StageContext(
                name,
                folder,
                {dep: self.folder(dep) for dep in stage.deps},
                {dep: (self.record(dep) or {}).get("record", {}) for dep in stage.deps},
            )
            rss_scope = "stage" if reset_peak_rss() else "process"
            started = time.perf_counter()
            try:
                record = stage.run(context) or {}
            except UserError as error:
                message = " ".join(str(error).split())
                summary.failed[name] = message
                blocked[name] = "failed"
                continue
            except Exception as error:  # a bug: keep the traceback beside the stage
                (folder / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
                summary.failed[name] = (
                    f"{type(error).__name__}: {' '.join(str(error).split())} "
                    f"(traceback in {folder / 'error.txt'})"
                )
                blocked[name] = "failed"
                continue
            write_json_atomic(
                folder / DONE_FILE,
                {
                    "name": name,
                    "key": self.keys[name],
                    "spec": stage.spec,
                    "deps": {dep: self.keys[dep] for dep in stage.deps},
                    "seconds": round(time.perf_counter() - started, 3),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "peak_rss_mib": round(peak_rss_mib(), 1),
                    "peak_rss_scope": rss_scope,
                    "record": record,
                },
            )
            summary.ran.append(name)
        return summary


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` for the duration; a second holder is refused with a one-line error
    naming it (`tinyminds.files.folder_lock`)."""
    with folder_lock(root, "tinyminds reproduce"):
        yield
