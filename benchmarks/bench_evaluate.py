"""Benchmark tinyminds' zero-shot scorer against lm-evaluation-harness on BLiMP, supplement and EWoK.

What is compared
----------------
The time to score BLiMP filtered (67 paradigms), the BLiMP supplement (5 tasks) and EWoK filtered
(11 domains) for one causal LM on this machine, float32, batch B (default 64), CPU by default, and
the decisions pair for pair:

* **tinyminds**: `tinyminds.evaluation` as `tinyminds evaluate` runs it: per suite, `load_task`
  (read and check every JSONL file) and `score_task` (requests, batched scoring, decisions).
* **lm-eval**: lm-evaluation-harness (the PyPI package ``lm-eval``) through its Python API,
  `lm_eval.simple_evaluate(model=HFLM(...), tasks=[...])`, one call per suite with every subtask
  of the suite (the harness batches the requests of all the tasks of a call together). The tasks
  are this script's own, written as YAML configs into a temporary folder: one task per JSONL file,
  ``output_type: multiple_choice``, ``dataset_path: json`` reading the same files, choices
  ``[" " + sentence_good, " " + sentence_bad]`` after an empty context with an empty target
  delimiter for BLiMP and the supplement (the harness then conditions on its prefix token: BOS,
  else EOS), context ``Context1`` and choices ``Target1``, ``Target2`` after a ``" "`` delimiter
  for EWoK, gold choice 0, metric ``acc``. That is SPEC §4's scoring, and what the BabyLM 2024
  pipeline does. `HFLM(pretrained=MODEL_DIR, backend="causal", dtype="float32", device=...,
  batch_size=B, add_bos_token=False)`: no BOS is added to an EWoK context whatever the tokenizer.

Per-pair scores come out of lm-eval through a subclass of `HFLM` whose ``loglikelihood`` calls the
harness's own and keeps each request's log-likelihood under (task, doc id, choice): a dict insert
per request (about 0.1 s for the 150,000 requests), and no sample logging, so no item text is ever
stored or written (EWoK's terms forbid it). Disagreements are listed by subtask and index with both
sides' score differences, never with text.

Why it is fair
--------------
Same model folder (loaded by each side as it loads models: `load_causal_lm` for tinyminds, `HFLM`
for lm-eval; load times are reported apart and not counted), same JSONL files, same batch size,
float32, same torch threads, same process and machine, one side after the other. Each suite's time
runs from the JSONL files to the accuracies on both sides (reading, tokenizing, scoring, deciding).
Before the timed runs each side is warmed up untimed on the first pair of every subtask: this also
builds the `datasets` cache (JSON -> Arrow, in the temporary folder) that lm-eval reads its tasks
from, so lm-eval is timed as it runs on a second and later evaluation (its first run on new files
also pays the conversion). lm-eval's `TaskManager` (indexing this script's task folder only, not
the harness's built-in tasks) is built once, untimed. ``bootstrap_iters=0``: no bootstrap of
standard errors (accuracy's standard error is closed-form anyway). Progress bars are off on both
sides.

The model
---------
``--model DIR`` scores a Hugging Face causal LM folder with its tokenizer. Otherwise a model of the
zoo (``--model-size``, default ``gpt2-tiny``: 2 layers, 128 wide; ``gpt2-44m``: the paper's
GPT2-44M) is built with random weights (seed 0) and saved with a byte-level BPE that tinyminds
trains on babylm-mini (``../shared/data/babylm-mini.tar.gz``, or ``--corpus DIR``) at ``--vocab``
tokens (default 2,000 for the scaled-down models, 16,000 for the paper's), in a temporary folder.
Random weights score like any others: the time does not depend on the weights, and the decisions
are compared pair for pair.

Data: ``../shared/data/{blimp,supplement,ewok}_filtered.tar.gz`` extracted into a temporary folder
that is deleted at the end (or ``--data DIR`` holding ``blimp_filtered/`` etc.). Nothing is written
into the work tree.

Run it (lm-eval needs its own environment; see benchmarks/README.md):
    python benchmarks/bench_evaluate.py [--model DIR | --model-size gpt2-tiny|gpt2-44m] [--vocab N]
        [--tasks blimp,supplement,ewok] [--batch 64] [--max-items N] [--device cpu]
        [--skip-lm-eval] [--data DIR] [--corpus DIR] [--json PATH]
(gpt2-tiny on 2 idle CPU cores: about 2 minutes, of which lm-eval takes most.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SUITES = ("blimp", "supplement", "ewok")
LABELS = {"blimp": "BLiMP filtered", "supplement": "BLiMP supplement", "ewok": "EWoK filtered"}

# lm-eval task configs. BLiMP and the supplement: empty context, no delimiter, each choice is
# " " + sentence (so the harness conditions on its prefix token); EWoK: context Context1, delimiter
# " ", choices Target1 and Target2. Gold is choice 0 (the good sentence / Target1); the harness's
# argmax picks the first of equal scores, so a tie counts as correct, as in SPEC §4.
TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: {doc_to_text}
target_delimiter: {delimiter}
doc_to_choice: !function tm_choices.{choices}
doc_to_target: 0
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
CHOICES_PY = '''\
"""Choices of the benchmark's lm-eval tasks (written by benchmarks/bench_evaluate.py)."""


def minimal_pair(doc):
    return [" " + doc["sentence_good"], " " + doc["sentence_bad"]]


def ewok(doc):
    return [doc["Target1"], doc["Target2"]]
'''


def machine_info() -> dict[str, Any]:
    import torch

    import tinyminds

    versions = {}
    for package in ("torch", "transformers", "tokenizers", "datasets", "lm_eval"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tinyminds_source": str(Path(tinyminds.__file__).resolve().parent),
        **versions,
    }


def extract(archive: Path, into: Path) -> None:
    if not archive.is_file():
        raise SystemExit(f"{archive} is absent: pass --data DIR (or --corpus DIR for the corpus)")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")


def build_model_folder(size: str, vocab: int | None, corpus: Path | None, work: Path) -> Path:
    """A zoo model with random weights (seed 0) and a tokenizer trained on the corpus, saved."""
    import torch

    from tinyminds.data.corpus import find_corpus_files, read_source
    from tinyminds.data.tokenizer import save_tokenizer, train_tokenizer
    from tinyminds.models.zoo import build_model, get_spec

    spec = get_spec(size)
    if not spec.is_causal_lm:
        raise SystemExit(f"--model-size {size} is not a causal LM")
    if corpus is None:
        extract(SHARED_DATA / "babylm-mini.tar.gz", work / "corpus")
        (corpus,) = [p for p in (work / "corpus").iterdir() if p.is_dir()]
    vocab = vocab or (16_000 if spec.paper else 2_000)
    lines = [line for path in find_corpus_files(corpus).train for line in read_source(path).lines]
    folder = work / f"model-{size}"
    save_tokenizer(train_tokenizer([line for line in lines if line], vocab_size=vocab), folder)
    torch.manual_seed(0)
    build_model(spec, vocab).save_pretrained(str(folder))
    return folder


def data_folder(args: argparse.Namespace, work: Path, suites: list[str]) -> Path:
    if args.data is not None:
        return args.data
    for suite in suites:
        extract(SHARED_DATA / f"{suite}_filtered.tar.gz", work / "data")
    return work / "data"


# ---------------------------------------------------------------------------------------------
# tinyminds


def run_tinyminds(
    model_dir: Path,
    data: Path,
    suites: list[str],
    batch: int,
    device: str,
    max_items: int | None,
    share_prefixes: bool | None = None,
) -> dict[str, Any]:
    import torch

    from tinyminds.evaluation.tasks import load_task
    from tinyminds.evaluation.zero_shot import (
        load_causal_lm,
        load_tokenizer,
        resolve_device,
        score_task,
    )

    started = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, resolve_device(device))
    load_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    for suite in suites:  # warm-up, untimed: the first pair of every subtask
        score_task(suite, load_task(suite, [data]), model, tokenizer, batch, 1)
    out: dict[str, Any] = {"load_seconds": load_seconds, "parameters": parameters, "suites": {}}
    for suite in suites:
        load_before = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        subtasks = load_task(suite, [data])
        result = score_task(suite, subtasks, model, tokenizer, batch, max_items, share_prefixes)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        scores = {(r["subtask"], r["index"]): (r["good"], r["bad"]) for r in result.pairs}
        out["suites"][suite] = {
            "seconds": wall,
            "cpu_seconds": cpu,
            "load_average_before": load_before,
            "accuracy": result.accuracy,
            "subtasks": {s.name: {"accuracy": s.accuracy, "n": s.n} for s in result.subtasks},
            "ties": result.ties,
            "scores": scores,
        }
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------------------
# lm-eval


def write_lm_eval_tasks(data: Path, suites: list[str], folder: Path) -> dict[str, dict[str, str]]:
    """One YAML task per JSONL file in ``folder``; returns {suite: {task name: subtask name}}."""
    from tinyminds.evaluation.tasks import task_files

    folder.mkdir(parents=True)
    (folder / "tm_choices.py").write_text(CHOICES_PY, encoding="utf-8")
    names: dict[str, dict[str, str]] = {}
    for suite in suites:
        names[suite] = {}
        for path in task_files(suite, [data], only_task=False):
            name = f"tmbench_{suite}_{path.stem}"
            if suite == "ewok":
                fields = {"doc_to_text": "Context1", "delimiter": '" "', "choices": "ewok"}
            else:
                fields = {"doc_to_text": '""', "delimiter": '""', "choices": "minimal_pair"}
            text = TASK_YAML.format(name=name, file=json.dumps(str(path.resolve())), **fields)
            (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
            names[suite][name] = path.stem
    return names


def run_lm_eval(
    model_dir: Path,
    data: Path,
    suites: list[str],
    batch: int,
    device: str,
    max_items: int | None,
    work: Path,
) -> dict[str, Any]:
    import datasets
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval"):  # INFO lines only; never sample text
        logging.getLogger(name).setLevel(logging.ERROR)
    datasets.disable_progress_bars()

    class RecordingHFLM(HFLM):
        """The harness's HFLM, keeping each request's log-likelihood (and nothing of its text)."""

        scores: dict[tuple[str, int, int], float]

        def loglikelihood(self, requests, disable_tqdm=False):
            results = super().loglikelihood(requests, disable_tqdm=True)  # as tinyminds: no bar
            for request, (log_likelihood, _) in zip(requests, results, strict=True):
                key = (request.task_name, request.doc_id, request.idx)
                self.scores[key] = log_likelihood
            return results

    names = write_lm_eval_tasks(data, suites, work / "lm-eval-tasks")
    started = time.perf_counter()
    lm = RecordingHFLM(
        pretrained=str(model_dir),
        backend="causal",
        device=device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        dtype="float32",
        batch_size=batch,
        add_bos_token=False,
    )
    lm.scores = {}
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    manager = TaskManager(include_path=str(work / "lm-eval-tasks"), include_defaults=False)
    manager_seconds = time.perf_counter() - started

    def evaluate(tasks: list[str], limit: int | None) -> dict[str, Any]:
        # The harness draws progress bars that no argument turns off (tinyminds' are off too).
        with contextlib.redirect_stderr(io.StringIO()):
            return simple_evaluate(
                model=lm,
                tasks=tasks,
                task_manager=manager,
                num_fewshot=0,
                limit=limit,
                bootstrap_iters=0,
                log_samples=False,
                cache_requests=False,
                use_cache=None,
            )

    # Warm-up, untimed: the first pair of every subtask (and the datasets cache of every file).
    evaluate([name for suite in suites for name in names[suite]], 1)
    out: dict[str, Any] = {
        "load_seconds": load_seconds,
        "task_manager_seconds": manager_seconds,
        "suites": {},
    }
    for suite in suites:
        lm.scores = {}
        load_before = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        results = evaluate(list(names[suite]), max_items)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        subtasks = {
            names[suite][task]: {"accuracy": values["acc,none"], "n": None}
            for task, values in results["results"].items()
            if task in names[suite]
        }
        scores: dict[tuple[str, int], tuple[float, float]] = {}
        for (task, doc_id, choice), value in lm.scores.items():
            key = (names[suite][task], doc_id)
            good, bad = scores.get(key, (float("nan"), float("nan")))
            scores[key] = (value, bad) if choice == 0 else (good, value)
        for name, values in subtasks.items():
            values["n"] = sum(1 for subtask, _ in scores if subtask == name)
        out["suites"][suite] = {
            "seconds": wall,
            "cpu_seconds": cpu,
            "load_average_before": load_before,
            "accuracy": sum(v["accuracy"] for v in subtasks.values()) / len(subtasks),
            "subtasks": subtasks,
            "ties": sum(1 for good, bad in scores.values() if good == bad),
            "scores": scores,
        }
    return out


# ---------------------------------------------------------------------------------------------
# comparison and table


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Pair-for-pair agreement of two suites' scores: counts, disagreements, largest differences."""
    same, disagreements, tie_differences, missing = 0, [], [], 0
    largest_score = 0.0  # the largest |tinyminds - lm-eval| over all scores
    for key, (good, bad) in ours["scores"].items():
        if key not in theirs["scores"]:
            missing += 1
            continue
        their_good, their_bad = theirs["scores"][key]
        largest_score = max(largest_score, abs(good - their_good), abs(bad - their_bad))
        if (good == bad) != (their_good == their_bad):
            tie_differences.append(
                {
                    "subtask": key[0],
                    "index": key[1],
                    "tinyminds_good_minus_bad": good - bad,
                    "lm_eval_good_minus_bad": their_good - their_bad,
                }
            )
        if (good >= bad) == (their_good >= their_bad):
            same += 1
        else:
            disagreements.append(
                {
                    "subtask": key[0],
                    "index": key[1],
                    "tinyminds_good_minus_bad": good - bad,
                    "lm_eval_good_minus_bad": their_good - their_bad,
                }
            )
    accuracy_differences = {
        name: theirs["subtasks"][name]["accuracy"] - values["accuracy"]
        for name, values in ours["subtasks"].items()
        if abs(theirs["subtasks"].get(name, {"accuracy": -1})["accuracy"] - values["accuracy"])
        > 1e-12
    }
    return {
        "pairs": len(ours["scores"]),
        "same_decisions": same,
        "missing_in_lm_eval": missing,
        "disagreements": disagreements,
        "tie_differences": tie_differences,
        "largest_score_difference": largest_score,
        "subtask_accuracy_differences": accuracy_differences,
    }


def print_tables(result: dict[str, Any]) -> None:
    machine, model = result["machine"], result["model"]
    print(
        f"\n{model['name']}: {model['parameters']:,} parameters, vocabulary {model['vocab_size']:,}, "
        f"batch {result['batch']}, float32, {result['device']}; {machine['cpus']} CPUs "
        f"({machine['cpu']}), {machine['torch_threads']} torch threads, torch {machine['torch']}, "
        f"transformers {machine['transformers']}, lm-eval {machine['lm_eval']}"
        + (f"; at most {result['max_items']} pairs per subtask" if result["max_items"] else "")
    )
    tm, lm = result["tinyminds"], result.get("lm_eval")
    header = ["suite", "subtasks", "pairs", "tinyminds s", "tinyminds acc %", "ties"]
    if lm:
        header += ["lm-eval s", "lm-eval acc %", "ties", "speed-up", "same decisions"]
    rows = []
    totals = {"tm": 0.0, "lm": 0.0, "pairs": 0, "same": 0}
    for suite in result["suites"]:
        ours = tm["suites"][suite]
        pairs = len(ours["scores"])
        row = [
            LABELS[suite],
            str(len(ours["subtasks"])),
            f"{pairs:,}",
            f"{ours['seconds']:.1f}",
            f"{100 * ours['accuracy']:.2f}",
            str(ours["ties"]),
        ]
        totals["tm"] += ours["seconds"]
        totals["pairs"] += pairs
        if lm:
            theirs, agreement = lm["suites"][suite], result["agreement"][suite]
            totals["lm"] += theirs["seconds"]
            totals["same"] += agreement["same_decisions"]
            row += [
                f"{theirs['seconds']:.1f}",
                f"{100 * theirs['accuracy']:.2f}",
                str(theirs["ties"]),
                f"{theirs['seconds'] / ours['seconds']:.1f}x",
                f"{agreement['same_decisions']:,} / {pairs:,}",
            ]
        rows.append(row)
    total = ["total", "", f"{totals['pairs']:,}", f"{totals['tm']:.1f}", "", ""]
    if lm:
        total += [
            f"{totals['lm']:.1f}",
            "",
            "",
            f"{totals['lm'] / totals['tm']:.1f}x",
            f"{totals['same']:,} / {totals['pairs']:,}",
        ]
    rows.append(total)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print(
        "| " + " | ".join("-" * (w - 1) + (":" if i else "-") for i, w in enumerate(widths)) + " |"
    )
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        f"model load (untimed above): tinyminds {tm['load_seconds']:.1f} s"
        + (
            f", lm-eval {lm['load_seconds']:.1f} s (+ TaskManager {lm['task_manager_seconds']:.1f} s)"
            if lm
            else ""
        )
    )
    loads = [tm["suites"][s]["load_average_before"] for s in result["suites"]]
    if lm:
        loads += [lm["suites"][s]["load_average_before"] for s in result["suites"]]
    print(f"1-minute load average before each timed suite: {', '.join(f'{x:.2f}' for x in loads)}")
    if not lm:
        return
    for suite in result["suites"]:
        agreement = result["agreement"][suite]
        print(
            f"{LABELS[suite]}: largest |score difference| between the two sides "
            f"{agreement['largest_score_difference']:.2e} nats; subtasks whose accuracy differs: "
            + (
                ", ".join(
                    f"{k} ({100 * v:+.2f})"
                    for k, v in agreement["subtask_accuracy_differences"].items()
                )
                or "none"
            )
        )
        for kind in ("disagreements", "tie_differences"):
            for item in agreement[kind]:
                print(
                    f"  {'disagreement' if kind == 'disagreements' else 'tie on one side only'}: "
                    f"{suite}/{item['subtask']} #{item['index']}: good - bad = "
                    f"{item['tinyminds_good_minus_bad']:+.3e} (tinyminds), "
                    f"{item['lm_eval_good_minus_bad']:+.3e} (lm-eval)"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, help="a Hugging Face causal LM folder (with tokenizer)"
    )
    parser.add_argument(
        "--model-size", default="gpt2-tiny", help="zoo model built when --model is not given"
    )
    parser.add_argument("--vocab", type=int, help="tokenizer size (default 2,000 / 16,000 paper)")
    parser.add_argument("--tasks", default="blimp,supplement,ewok", help="suites, comma-separated")
    parser.add_argument("--batch", type=int, default=64, help="batch size of both sides")
    parser.add_argument("--max-items", type=int, help="first N pairs of every subtask only")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--threads", type=int, help="torch threads of both sides (default: torch's)"
    )
    parser.add_argument("--skip-lm-eval", action="store_true", help="time tinyminds only")
    parser.add_argument(
        "--share-prefixes",
        choices=("auto", "yes", "no"),
        default="auto",
        help="tinyminds' prefix trees (auto: on the CPU, and on a GPU for models of 10M+ parameters)",
    )
    parser.add_argument("--data", type=Path, help="folder holding blimp_filtered/ etc.")
    parser.add_argument(
        "--corpus", type=Path, help="corpus for the tokenizer (default babylm-mini)"
    )
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.tasks.split(",") if s.strip()]
    if not suites or any(s not in SUITES for s in suites):
        raise SystemExit(f"--tasks: choose among {', '.join(SUITES)}")
    if args.batch < 1 or (args.max_items is not None and args.max_items < 1):
        raise SystemExit("--batch and --max-items must be at least 1")

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tm-bench-eval-") as tmp:
        work = Path(tmp)
        # Nothing may come from the Hub, and the datasets cache (which would hold EWoK as Arrow
        # files) lives in the temporary folder; both must be set before datasets is imported.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_HOME"] = str(work / "hf-home")
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf-datasets")
        os.environ["TQDM_DISABLE"] = "1"
        from transformers.utils import logging as hf_logging

        from tinyminds.console import set_quiet

        set_quiet(True)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

        data = data_folder(args, work, suites)
        model_dir = args.model or build_model_folder(args.model_size, args.vocab, args.corpus, work)
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        result: dict[str, Any] = {
            "machine": machine_info(),
            "model": {
                "name": str(args.model) if args.model else args.model_size,
                "vocab_size": config.get("vocab_size"),
            },
            "batch": args.batch,
            "device": args.device,
            "max_items": args.max_items,
            "share_prefixes": args.share_prefixes,
            "suites": suites,
        }
        share = {"auto": None, "yes": True, "no": False}[args.share_prefixes]
        result["tinyminds"] = run_tinyminds(
            model_dir, data, suites, args.batch, args.device, args.max_items, share
        )
        result["model"]["parameters"] = result["tinyminds"]["parameters"]
        if not args.skip_lm_eval:
            result["lm_eval"] = run_lm_eval(
                model_dir, data, suites, args.batch, args.device, args.max_items, work
            )
            result["agreement"] = {
                suite: compare(
                    result["tinyminds"]["suites"][suite], result["lm_eval"]["suites"][suite]
                )
                for suite in suites
            }
    print_tables(result)
    if args.json:
        for side in ("tinyminds", "lm_eval"):  # per-pair scores stay out of the file
            for suite in result.get(side, {}).get("suites", {}).values():
                suite.pop("scores")
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
