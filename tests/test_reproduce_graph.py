"""The stage graph of `tinyminds reproduce` on fake stages: skip, resume, invalidation, failures,
the run lock. Nothing here trains a model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tinyminds.errors import UserError
from tinyminds.reproduce.graph import DONE_FILE, Graph, Stage, StageContext, run_lock


class Calls:
    """Fake stages that record each run; ``fail`` names stages that raise."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.fail: dict[str, Exception] = {}

    def stage(self, name: str, deps: tuple[str, ...] = (), **spec: Any) -> Stage:
        def run(context: StageContext) -> dict[str, Any]:
            self.ran.append(name)
            if name in self.fail:
                (context.folder / "half-written").write_text("x", encoding="utf-8")
                raise self.fail[name]
            value = spec.get("value", 0) + sum(r["total"] for r in context.records.values())
            (context.folder / "out.txt").write_text(str(value), encoding="utf-8")
            return {"total": value}

        return Stage(name, deps, dict(spec), run)

    def grid(self, root: Path, **values: int) -> Graph:
        """a -> b -> d, a -> c -> d, and e alone; ``values`` change a stage's spec."""
        return Graph(
            [
                self.stage("a", value=values.get("a", 1)),
                self.stage("b", ("a",), value=values.get("b", 2)),
                self.stage("c", ("a",), value=values.get("c", 3)),
                self.stage("d", ("b", "c"), value=values.get("d", 4)),
                self.stage("e", value=values.get("e", 5)),
            ],
            root,
        )


def test_runs_in_order_then_skips_everything(tmp_path: Path) -> None:
    calls = Calls()
    graph = calls.grid(tmp_path)
    assert set(graph.states().values()) == {"to run"}
    summary = graph.run()
    assert calls.ran == ["a", "b", "c", "d", "e"] and summary.ran == calls.ran
    assert (graph.folder("d") / "out.txt").read_text() == str(4 + (2 + 1) + (3 + 1))
    assert set(graph.states().values()) == {"done"}
    calls.ran.clear()
    summary = calls.grid(tmp_path).run()
    assert calls.ran == [] and summary.reused == ["a", "b", "c", "d", "e"]


def test_a_changed_config_reruns_only_its_dependants(tmp_path: Path) -> None:
    calls = Calls()
    calls.grid(tmp_path).run()
    calls.ran.clear()
    changed = calls.grid(tmp_path, c=30)
    assert changed.states() == {
        "a": "done",
        "b": "done",
        "c": "stale",
        "d": "stale",
        "e": "done",
    }
    changed.run()
    assert calls.ran == ["c", "d"]
    assert (changed.folder("d") / "out.txt").read_text() == str(4 + 3 + 31)
    # The old outputs are kept (content-addressed): going back to the old config reruns nothing.
    calls.ran.clear()
    calls.grid(tmp_path).run()
    assert calls.ran == []


def test_a_failure_keeps_finished_stages_and_resumes_in_the_same_folder(tmp_path: Path) -> None:
    calls = Calls()
    calls.fail["b"] = UserError("the corpus\nis empty")
    graph = calls.grid(tmp_path)
    summary = graph.run()
    assert summary.failed == {"b": "the corpus is empty"}  # one line
    assert summary.skipped == {"d": "needs b, which failed"}
    assert calls.ran == ["a", "b", "c", "e"]  # independent stages still ran
    assert graph.states() == {"a": "done", "b": "partial", "c": "done", "d": "to run", "e": "done"}
    assert not (graph.folder("b") / DONE_FILE).exists()
    # The fixed rerun runs b in its folder (where the interrupted try's files are) and then d.
    del calls.fail["b"]
    calls.ran.clear()
    seen = []
    summary = graph.run(on_start=lambda name, state: seen.append((name, state)))
    assert calls.ran == ["b", "d"] and seen == [("b", "partial"), ("d", "to run")]
    assert (graph.folder("b") / "half-written").exists()


def test_a_bug_keeps_its_traceback_beside_the_stage(tmp_path: Path) -> None:
    calls = Calls()
    calls.fail["c"] = ZeroDivisionError("division by zero")
    graph = calls.grid(tmp_path)
    summary = graph.run()
    assert summary.failed["c"].startswith("ZeroDivisionError: division by zero (traceback in")
    assert "Traceback" in (graph.folder("c") / "error.txt").read_text()


def test_an_interrupt_leaves_the_stage_unfinished(tmp_path: Path) -> None:
    calls = Calls()
    calls.fail["c"] = KeyboardInterrupt()
    graph = calls.grid(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        graph.run()
    assert graph.states() == {
        "a": "done",
        "b": "done",
        "c": "partial",
        "d": "to run",
        "e": "to run",
    }
    del calls.fail["c"]
    calls.ran.clear()
    graph.run()
    assert calls.ran == ["c", "d", "e"]


def test_only_runs_a_stage_and_its_unfinished_dependencies(tmp_path: Path) -> None:
    calls = Calls()
    graph = calls.grid(tmp_path)
    assert graph.select(["b"]) == ["a", "b"]
    graph.run(graph.select(["b"]))
    assert calls.ran == ["a", "b"]
    assert graph.select(["d"]) == ["c", "d"]  # a and b are done
    summary = graph.run(graph.select(["[bc]"]))  # a pattern; a finished stage is reused
    assert summary.reused == ["b"] and summary.ran == ["c"]
    with pytest.raises(UserError, match="--only x: no such stage; stages: a, b, c, d, e"):
        graph.select(["x"])
    assert "c                                " in graph.describe()


def test_unavailable_stages_and_their_dependants_are_skipped(tmp_path: Path) -> None:
    calls = Calls()
    stages = [
        calls.stage("a"),
        Stage("m", ("a",), {}, lambda context: {}, unavailable="recipe m is not registered"),
        calls.stage("n", ("m",)),
    ]
    graph = Graph(stages, tmp_path)
    assert graph.states() == {"a": "to run", "m": "unavailable", "n": "blocked (m is unavailable)"}
    summary = graph.run()
    assert summary.ran == ["a"]
    assert summary.skipped == {"m": "recipe m is not registered", "n": "needs m, which did not run"}
    assert "unavailable (recipe m is not registered)" in graph.describe()


def test_a_marker_from_another_key_is_not_taken_for_done(tmp_path: Path) -> None:
    calls = Calls()
    graph = calls.grid(tmp_path)
    graph.run()
    marker = graph.folder("e") / DONE_FILE
    document = json.loads(marker.read_text())
    marker.write_text(json.dumps({**document, "key": "0" * 64}))
    assert graph.state("e") == "partial"


def test_a_second_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tinyminds.reproduce.graph import run_lock
        with run_lock(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        refused = pytest.raises(
            UserError, match=r"in use by another tinyminds reproduce \(pid \d+\)"
        )
        with refused, run_lock(tmp_path):
            pass
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
    with run_lock(tmp_path):  # released when the holder exits
        pass


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's clear_refs")
def test_peak_memory_is_each_stages_own(tmp_path: Path) -> None:
    """A stage that holds 256 MiB reports it; the small stage after it does not inherit that peak.

    In a fresh interpreter: the test suite's own process holds memory of earlier tests that its
    allocator may reuse, which would hide the stage's allocation."""
    script = textwrap.dedent(
        f"""
        import mmap
        from pathlib import Path
        from tinyminds.reproduce.graph import Graph, Stage

        def big(context):
            # Fresh anonymous pages, each touched so that it is resident.
            with mmap.mmap(-1, 256 * 2**20) as block:
                for offset in range(0, len(block), mmap.PAGESIZE):
                    block[offset] = 1
                return {{"bytes": len(block)}}

        stages = [Stage("big", (), {{}}, big), Stage("small", ("big",), {{}}, lambda context: {{}})]
        Graph(stages, Path({str(tmp_path)!r})).run()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    graph = Graph([Stage("big", (), {}, _unused), Stage("small", ("big",), {}, _unused)], tmp_path)
    done = {name: json.loads((graph.folder(name) / DONE_FILE).read_text()) for name in graph.stages}
    assert done["big"]["peak_rss_scope"] == done["small"]["peak_rss_scope"] == "stage"
    assert done["big"]["peak_rss_mib"] - done["small"]["peak_rss_mib"] > 200


def _unused(context: StageContext) -> dict[str, Any]:
    raise AssertionError("the stages ran in the subprocess")


def test_unused_folders_are_those_of_older_configs_only(tmp_path: Path) -> None:
    calls = Calls()
    calls.grid(tmp_path).run()
    old_b, old_d = calls.grid(tmp_path).folder("b"), calls.grid(tmp_path).folder("d")
    graph = calls.grid(tmp_path, b=20)  # b and d change; a, c and e stay
    graph.run()
    (tmp_path / "stages" / "notes").mkdir()  # not a stage folder: never listed
    assert graph.unused_folders() == sorted([old_b, old_d])
    for path in graph.unused_folders():
        shutil.rmtree(path)
    assert graph.unused_folders() == [] and set(graph.states().values()) == {"done"}
    assert (tmp_path / "stages" / "notes").is_dir()
