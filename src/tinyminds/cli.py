"""The `tinyminds` command: each subcommand maps to one plain function.

A user's mistake (`UserError`) prints one line and exits with status 2; nothing already written is
removed. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

from tinyminds import __version__
from tinyminds.console import set_quiet
from tinyminds.errors import UserError


def _prepare(args: argparse.Namespace) -> None:
    from tinyminds.data.corpus import find_corpus_files

    find_corpus_files(Path(args.corpus))  # a missing corpus is reported before torch loads
    from tinyminds.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        chunk_size=args.chunk_size,
        tokenizer=args.tokenizer,
        encoding_errors=args.encoding_errors,
        dev_fraction=args.dev_fraction,
    )
    manifest = prepare(Path(args.corpus), Path(args.out), options)
    print(
        f"prepared {args.corpus} -> {args.out} ({manifest['layout']} layout, {manifest['seconds']} s)"
    )
    for split, entry in manifest["splits"].items():
        print(
            f"  {split:5} {entry['words']:>12,} words {entry['tokens']:>12,} tokens "
            f"{entry['chunks']:>9,} chunks of {entry['chunk_size']}"
        )
    print(
        f"  tokenizer {manifest['tokenizer']['vocab_size']:,} tokens, hash {manifest['tokenizer']['hash'][:12]}"
    )


def _models(args: argparse.Namespace) -> None:
    from tinyminds.models.zoo import MODEL_ZOO, PAPER_VOCAB_SIZE, count_parameters

    print(
        f"{'name':12} {'arch':7} {'hidden':>6} {'layers':>6} {'heads':>5} {'MLP':>5} "
        f"{'dropout':>7} {'parameters':>13}  note"
    )
    for spec in MODEL_ZOO.values():
        # The generator's vocabulary is the shared tokenizer plus one [MASK] token.
        vocab = args.vocab_size + (0 if spec.is_causal_lm else 1)
        note = spec.note if spec.paper else f"scaled-down (CPU) {spec.note}".strip()
        print(
            f"{spec.name:12} {spec.arch:7} {spec.hidden:>6} {spec.layers:>6} {spec.heads:>5} "
            f"{spec.intermediate:>5} {spec.dropout:>7} {count_parameters(spec, vocab):>13,}  {note}"
        )
    if args.vocab_size == PAPER_VOCAB_SIZE:
        print(
            f"(parameters at the paper's vocabulary of {PAPER_VOCAB_SIZE:,} tokens; --vocab-size to change)"
        )


def _recipes(args: argparse.Namespace) -> None:
    from tinyminds.config import declared_ranges, field_docs
    from tinyminds.models.zoo import MODEL_ZOO, count_parameters
    from tinyminds.recipes import list_recipes, load_distill_config, load_train_config
    from tinyminds.training.config import DistillConfig, TrainConfig

    loaders = {
        "train": (load_train_config, TrainConfig),
        "distill": (load_distill_config, DistillConfig),
    }
    recipes = list_recipes()
    if args.show:
        kinds = [r.kind for r in recipes if r.name == args.show] or ["train"]
        load, cls = loaders[kinds[0]]
        config = load(args.show)
        docs = field_docs(cls)
        ranges = declared_ranges(cls)
        print(f"{args.show} ({kinds[0]} recipe)")
        for f in fields(cls):
            allowed = f" [valid: {ranges[f.name][0]}]" if f.name in ranges else ""
            print(f"  {f.name:16} {getattr(config, f.name)!s:24} {docs.get(f.name, '')}{allowed}")
        return
    print(f"{'recipe':16} {'kind':7} {'model':12} {'parameters':>13}  description")
    for recipe in recipes:
        config = loaders[recipe.kind][0](str(recipe.path))
        spec = MODEL_ZOO[config.model]
        print(
            f"{recipe.name:16} {recipe.kind:7} {spec.name:12} {count_parameters(spec):>13,}  "
            f"{recipe.description}"
        )


def _train(args: argparse.Namespace) -> None:
    from tinyminds.recipes import load_train_config

    config = load_train_config(args.recipe, args.overrides)  # before torch loads: errors come fast
    from tinyminds.training.engine import train

    result = train(config, resume=args.resume)
    if result.run_dir and _is_main_process():
        print(
            f"trained {config.recipe}: best epoch {result.best_epoch}, validation CE "
            f"{result.best_val_ce:.4f}, {result.tokens_per_second:,.0f} tokens/s, {result.seconds:.0f} s"
        )
        print(f"model folder: {result.model_dir}")
        print(f"run folder:   {result.run_dir} (config.yaml, metrics.jsonl, checkpoints/)")
        if result.milestones:
            print(
                f"milestones:   {', '.join(result.milestones)} in {result.run_dir}/milestones "
                f"(score them: tinyminds trajectory {result.run_dir} --data EVAL_DATA)"
            )


def _distill(args: argparse.Namespace) -> None:
    from tinyminds.recipes import load_distill_config

    config = load_distill_config(args.recipe, args.overrides)  # before torch loads
    from tinyminds.training.objectives.distillation import distill

    result = distill(config, resume=args.resume)
    if _is_main_process():
        print(
            f"distilled {config.recipe}: best epoch {result.best_epoch}, validation CE "
            f"{result.best_val_ce:.4f}, {result.tokens_per_second:,.0f} student tokens/s, "
            f"{result.seconds:.0f} s"
        )
        print(f"model folder: {result.model_dir}")
        print(
            f"run folder:   {result.run_dir} (config.yaml, metrics.jsonl with ce and kl, checkpoints/)"
        )
        if result.milestones:
            print(f"milestones:   {', '.join(result.milestones)} in {result.run_dir}/milestones")


def _evaluate(args: argparse.Namespace) -> None:
    from tinyminds.evaluation.tasks import SUITES, parse_task_names

    convention = args.convention
    if args.suite:
        if args.tasks is not None:
            raise UserError("give --suite or --tasks, not both")
        tasks, suite_convention = SUITES[args.suite]
        if convention not in (None, suite_convention):
            raise UserError(f"--suite {args.suite} scores with the {suite_convention} convention")
        convention = suite_convention
    else:
        # before torch loads: a typo is reported at once
        tasks = parse_task_names(args.tasks or "blimp,supplement,ewok")
    temperatures: tuple[float, ...] = ()
    if args.temperature_sweep:
        from tinyminds.evaluation.scoring import temperature_grid

        try:
            low, high, step = (float(part) for part in args.temperature_sweep.split(","))
        except ValueError:
            raise UserError(
                f"--temperature-sweep {args.temperature_sweep!r}: expected MIN,MAX,STEP numbers"
            ) from None
        temperatures = temperature_grid(low, high, step)
    from tinyminds.evaluation.results import report
    from tinyminds.evaluation.zero_shot import evaluate

    result = evaluate(
        Path(args.model),
        tasks,
        [Path(path) for path in args.data],
        Path(args.out),
        name=args.name,
        batch_size=args.batch_size,
        device=args.device,
        max_items=args.max_items,
        epochs=args.epochs,
        max_train_examples=args.max_train_examples,
        glue_batch_size=args.glue_batch_size,
        glue_recipe=args.glue_recipe,
        glue_padding=args.glue_padding,
        glue_pooling=args.glue_pooling,
        convention=convention,
        skip_missing=args.tasks is None,  # a default or suite list: name what has no data
        temperatures=temperatures,
    )
    print(report(result.summary))
    print(f"results: {result.json_path}")
    if result.summary["pairs_file"]:
        print(f"pairs:   {result.pairs_path}")
    if result.predictions_path:
        print(f"GLUE predictions: {result.predictions_path}")


def _trajectory(args: argparse.Namespace) -> None:
    from tinyminds.evaluation.trajectory import trajectory

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    files = trajectory(
        Path(args.run),
        [Path(path) for path in args.data],
        Path(args.out) if args.out else None,
        suite=args.suite,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(files.markdown)
    print(f"table:  {files.markdown_path}")
    print(f"scores: {files.json_path}")
    print(f"chart:  {files.png_path}")


def _compare(args: argparse.Namespace) -> None:
    from tinyminds.evaluation.compare import compare

    files = compare([Path(path) for path in args.results], Path(args.out), args.against_first)
    print(files.markdown)
    print(f"table:  {files.markdown_path}")
    print(f"tests:  {files.json_path}")
    print(f"chart:  {files.png_path}")


def _upgrade(args: argparse.Namespace) -> None:
    from tinyminds.data.tokenizer import make_tokenizer_portable, tokenizer_folders
    from tinyminds.files import folder_lock

    roots = [Path(folder) for folder in args.folders]
    found = {root: tokenizer_folders(root) for root in roots}  # every error before any write
    for root, folders in found.items():
        if not folders:
            raise UserError(
                f"{root}: no model or tokenizer folder (no tokenizer_config.json) in it"
            )
    for root, folders in found.items():
        with folder_lock(root, "tinyminds upgrade"):
            for folder in folders:
                changed = make_tokenizer_portable(folder)
                print(f"{'upgraded' if changed else 'already portable'}: {folder}")


def _sweep(args: argparse.Namespace) -> None:
    from tinyminds.sweep.report import status_text
    from tinyminds.sweep.runner import SPACE_COPY, run_sweep
    from tinyminds.sweep.space import load_space

    if args.status:
        folder = Path(args.status)
        if not (folder / SPACE_COPY).is_file():
            raise UserError(f"{folder} holds no sweep (no {SPACE_COPY})")
        print(status_text(load_space(folder / SPACE_COPY), folder, args.storage))
        return
    if not args.space or not args.out:
        raise UserError("give the search space and --out SWEEP_DIR (or --status SWEEP_DIR)")
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--workers and --threads must be at least 1")
    space = load_space(Path(args.space))  # checked whole before anything is written
    report = run_sweep(
        space, Path(args.out), workers=args.workers, storage=args.storage, threads=args.threads
    )
    print(f"report: {report}")


def _seed_list(text: str) -> list[int]:
    """``"42,7"`` -> ``[42, 7]`` (argparse turns the ValueError into a one-line usage error)."""
    return [int(part) for part in text.split(",") if part.strip()]


def _reproduce(args: argparse.Namespace) -> None:
    from tinyminds.demo import find_eval_data
    from tinyminds.reproduce import make_settings, print_summary, reproduce

    out = Path(args.out)
    search = find_eval_data(out, Path(args.eval_data) if args.eval_data else None)
    if search.folder is None and not args.skip_evaluation:
        raise UserError(
            f"no evaluation data (looked at: {'; '.join(search.looked)}); pass --eval-data DIR (the BabyLM 2024 evaluation_data folder: "
            "https://osf.io/ad7qg/) or --skip-evaluation"
        )
    settings = make_settings(
        args.scale,
        out,
        Path(args.corpus) if args.corpus else None,
        None if args.skip_evaluation else search.folder,
        [] if args.skip_evaluation else search.tasks,
        max_steps=-1 if args.max_steps is None else args.max_steps,
        eval_max_items="scale" if args.max_items is None else (args.max_items or None),
        glue=args.glue,
        device=args.device,
        overrides=args.set,
        seeds=args.seeds,
    )
    only = [name for item in args.only or [] for name in item.split(",") if name]
    command = "tinyminds " + shlex.join(args.argv)
    result = reproduce(
        settings, out, only=only, dry_run=args.dry_run, prune=args.prune, command=command
    )
    if args.dry_run:
        return
    print_summary(result)
    failed = result.summary.failed if result.summary else {}
    if failed:
        name, why = next(iter(failed.items()))
        more = (
            f" (and {len(failed) - 1} more stages; see {result.report})" if len(failed) > 1 else ""
        )
        raise UserError(f"stage {name} failed: {why}{more}")


def _demo(args: argparse.Namespace) -> None:
    from tinyminds.demo import run_demo

    run_demo(Path(args.out), Path(args.eval_data) if args.eval_data else None)


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _parser() -> argparse.ArgumentParser:
    def command(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog="example:\n" + textwrap.indent(example.strip(), "  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "-q", "--quiet", action="store_true", help="no progress bars or status lines"
        )
        return sub

    parser = argparse.ArgumentParser(
        prog="tinyminds",
        description="Train small language models the BabyLM way and distill teacher ensembles.",
        epilog="example:\n  tinyminds demo\n  tinyminds prepare babylm_data/ --out data/babylm-10m\n"
        "  tinyminds evaluate runs/gpt2-44m/model --data evaluation_data/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyminds {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = command(
        "prepare",
        "Clean a BabyLM corpus, train its BPE tokenizer and cut it into 128-token chunks.",
        "tinyminds prepare babylm_data/ --out data/babylm-10m\n"
        "tinyminds prepare my_texts/ --out data/mine --vocab-size 8000",
    )
    sub.add_argument(
        "corpus",
        help="corpus folder: train_10M/ + dev/, babylm_10M/ + babylm_dev/, "
        "train/ + dev/, or .train/.dev/.txt files",
    )
    sub.add_argument("--out", required=True, help="output data folder (reused as a cache)")
    sub.add_argument(
        "--vocab-size", type=int, default=16_000, help="BPE vocabulary (default 16000)"
    )
    sub.add_argument(
        "--min-frequency", type=int, default=2, help="BPE min pair frequency (default 2)"
    )
    sub.add_argument("--chunk-size", type=int, default=128, help="tokens per chunk (default 128)")
    sub.add_argument("--tokenizer", help="use this tokenizer folder instead of training one")
    sub.add_argument(
        "--encoding-errors",
        choices=["strict", "replace"],
        default="strict",
        help="strict: non-UTF-8 bytes are an error; replace: they become U+FFFD",
    )
    sub.add_argument(
        "--dev-fraction",
        type=float,
        default=0.1,
        help="held-out share of each train file when there are no dev files (default 0.1)",
    )
    sub.set_defaults(handler=_prepare)

    sub = command("models", "List the model zoo with true parameter counts.", "tinyminds models")
    sub.add_argument(
        "--vocab-size", type=int, default=16_000, help="vocabulary to count parameters at"
    )
    sub.set_defaults(handler=_models)

    sub = command(
        "recipes",
        "List the runnable recipes, or show one with every field explained.",
        "tinyminds recipes\ntinyminds recipes --show gpt2-44m",
    )
    sub.add_argument("--show", metavar="RECIPE", help="print the resolved config of RECIPE")
    sub.set_defaults(handler=_recipes)

    sub = command(
        "train",
        "Train a model from a recipe; any config field can be overridden as key=value.",
        "tinyminds train gpt2-44m data=data/babylm-10m out=runs/gpt2-44m\n"
        "tinyminds train llama-tiny data=data/demo epochs=2 lr=1e-3\n"
        "tinyminds train gpt2-44m data=data/babylm-10m out=runs/gpt2-44m --resume\n"
        "torchrun --nproc_per_node 4 -m tinyminds train gpt2-705m data=data/babylm-10m",
    )
    sub.add_argument("recipe", help="recipe name (tinyminds recipes) or path to a YAML file")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sub.add_argument(
        "--resume", action="store_true", help="continue the run in out= from its last checkpoint"
    )
    sub.set_defaults(handler=_train)

    sub = command(
        "distill",
        "Distill an ensemble of teachers into a student (CE + KL, online or from a teacher cache).",
        "tinyminds distill distilledgpt-44m data=data/babylm-10m out=runs/distilledgpt-44m \\\n"
        "    teachers=[runs/gpt2-44m/model,runs/llama-60m/model]\n"
        "tinyminds distill distill-tiny data=data/demo teacher_cache=false kl_reduction=token\n"
        "tinyminds distill contrastivellama-58m data=data/babylm-10m contrastive_weight=0.1\n"
        "tinyminds distill maskedadversarialllama-58m data=data/babylm-10m "
        "generator=runs/electra-56m/model\n"
        "torchrun --nproc_per_node 4 -m tinyminds distill babyllama-58m data=data/babylm-10m",
    )
    sub.add_argument("recipe", help="distillation recipe name (tinyminds recipes) or a YAML path")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sub.add_argument(
        "--resume", action="store_true", help="continue the run in out= from its last checkpoint"
    )
    sub.set_defaults(handler=_distill)

    sub = command(
        "evaluate",
        "Score a causal LM folder on BLiMP, the BLiMP supplement and EWoK (zero-shot minimal pairs), "
        "and on GLUE by LoRA fine-tuning.",
        "tinyminds evaluate runs/gpt2-44m/model --data evaluation_data/\n"
        "tinyminds evaluate runs/gpt2-44m/model --tasks blimp,glue --data evaluation_data/ --device cuda\n"
        "tinyminds evaluate runs/gpt2-44m/model --tasks glue --data evaluation_data/ --epochs 2 "
        "--max-train-examples 256\n"
        "tinyminds evaluate runs/gpt2-44m/model --tasks blimp --data evaluation_data/ --max-items 20\n"
        "tinyminds evaluate my_model/ --tasks ewok --data ewok_filtered/physical-relations.jsonl\n"
        "tinyminds evaluate runs/llama-60m/model --data evaluation_data/ --out results/ --device cuda",
    )
    sub.add_argument(
        "model", metavar="MODEL_DIR", help="Hugging Face causal LM folder with its tokenizer"
    )
    sub.add_argument(
        "--suite",
        choices=["babylm-2024", "babylm-2025", "babylm-2025-fast"],
        help="a pipeline's whole zero-shot suite instead of --tasks: babylm-2024 (blimp, "
        "supplement, ewok; 2024 scoring), babylm-2025 (those plus entity_tracking, wug_adj and "
        "reading; 2025 scoring), babylm-2025-fast (the fast sets its pipeline runs on checkpoints)",
    )
    sub.add_argument(
        "--tasks",
        default=None,
        help="comma-separated: blimp, supplement, ewok, the BabyLM 2025 fast sets blimp_fast, "
        "supplement_fast, ewok_fast, the 2025 tasks entity_tracking, entity_tracking_fast, "
        "wug_adj, reading, and glue (default blimp,supplement,ewok; glue fine-tunes a LoRA "
        "classifier per task: hours on a CPU)",
    )
    sub.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="BabyLM evaluation_data/ folder (holding blimp_filtered/, supplement_filtered/, "
        "ewok_filtered/, glue_filtered/), a task folder or a .jsonl file; repeat for several",
    )
    sub.add_argument(
        "--out",
        default="results",
        help="results folder: NAME.json and NAME.pairs.jsonl (default ./results)",
    )
    sub.add_argument(
        "--name",
        help="name of the results files (default: the model folder's name, or the run's for "
        "a tinyminds runs/NAME/model folder)",
    )
    sub.add_argument(
        "--batch-size", type=int, default=64, help="sequences per forward pass (default 64)"
    )
    sub.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="default: cuda if available",
    )
    sub.add_argument(
        "--max-items",
        type=int,
        metavar="N",
        help="score only the first N pairs of each subtask (a quick check)",
    )
    sub.add_argument(
        "--convention",
        choices=["2024", "2025"],
        default=None,
        help="how minimal pairs are scored: 2024 (the paper's and lm-eval's: a prefix token, "
        "every token scored; the default) or 2025 (the BabyLM 2025 pipeline's: no prefix token, "
        "a sentence's first token unscored; the default when a 2025-only task is asked for); "
        "recorded in the results",
    )
    sub.add_argument(
        "--temperature-sweep",
        metavar="MIN,MAX,STEP",
        help="the BabyLM 2025 pipeline's temperature sweep (2025 convention): score at every T of "
        "arange(MIN, MAX + STEP, STEP) too and report the best T apart from the T = 1 scores "
        "(e.g. 1,3,0.05)",
    )
    sub.add_argument(
        "--epochs", type=int, metavar="N", help="GLUE: fine-tune N epochs instead of 32"
    )
    sub.add_argument(
        "--max-train-examples",
        type=int,
        metavar="N",
        help="GLUE: train on a seeded random N examples of each training file (a quick check)",
    )
    sub.add_argument(
        "--glue-recipe",
        choices=["2024", "2025"],
        default="2024",
        help="GLUE: 2024 (the paper's: LoRA, 32 epochs; the default) or 2025 (the BabyLM 2025 "
        "pipeline's: full fine-tuning, an MLP head on one position, its 7 tasks)",
    )
    sub.add_argument(
        "--glue-padding",
        choices=["right", "left"],
        default="right",
        help="GLUE 2025: padding side (right, the pipeline's default; its issue #38: GPT-2 models "
        "differ by about 6 points between the two)",
    )
    sub.add_argument(
        "--glue-pooling",
        choices=["first", "last"],
        default="first",
        help="GLUE 2025: the position the head reads: first (position 0, the pipeline's) or the "
        "last real token",
    )
    sub.add_argument(
        "--glue-batch-size", type=int, metavar="N", help="GLUE: N examples per step instead of 64"
    )
    sub.set_defaults(handler=_evaluate)

    sub = command(
        "trajectory",
        "Score every word-milestone checkpoint of a run (RUN/milestones/chck_{N}M, saved by "
        "training with milestones=babylm-2025) on a zero-shot suite and draw the learning "
        "trajectory: score against words seen, one line per task.",
        "tinyminds train gpt2-44m data=data/babylm-10m milestones=babylm-2025\n"
        "tinyminds trajectory runs/gpt2-44m --data evaluation_data/\n"
        "tinyminds trajectory runs/gpt2-44m --data evaluation_data/ --suite babylm-2024 "
        "--out trajectories/gpt2-44m",
    )
    sub.add_argument("run", metavar="RUN_DIR", help="a run folder holding milestones/chck_*M")
    sub.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="the evaluation data (folders of the suite's tasks); repeat for several",
    )
    sub.add_argument(
        "--suite",
        choices=["babylm-2025-fast", "babylm-2025", "babylm-2024"],
        default="babylm-2025-fast",
        help="tasks and scoring convention (default babylm-2025-fast, the 2025 pipeline's "
        "checkpoint suite); tasks without data are named and skipped",
    )
    sub.add_argument(
        "--out",
        help="folder for each checkpoint's results, trajectory.json, .md and .png "
        "(default RUN/trajectory); checkpoints already scored there are kept",
    )
    sub.add_argument(
        "--batch-size", type=int, default=64, help="sequences per forward pass (default 64)"
    )
    sub.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if any"
    )
    sub.set_defaults(handler=_trajectory)

    sub = command(
        "compare",
        "Compare models' evaluation results: scores side by side, the paper's published numbers, "
        "Wilcoxon signed-rank and rank-sum tests over paired subtask scores, a bar chart.",
        "tinyminds compare results/gpt2-44m.json results/llama-60m.json results/distilledgpt-44m.json\n"
        "tinyminds compare results/*.json --against-first --out comparison/",
    )
    sub.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS_JSON",
        help="NAME.json files written by tinyminds evaluate (at least 2)",
    )
    sub.add_argument(
        "--out",
        default="comparison",
        help="folder for comparison.md, comparison.json and comparison.png (default ./comparison)",
    )
    sub.add_argument(
        "--against-first",
        action="store_true",
        help="test each model against the first only (default: every pair)",
    )
    sub.set_defaults(handler=_compare)

    sub = command(
        "reproduce",
        "Run the paper's experiment grid (teachers, baselines, generator, the four students, "
        "evaluation, Wilcoxon tests) as a graph of content-addressed stages, and write "
        "RUN_DIR/report.md. A rerun skips finished stages, an interrupted one resumes, and a "
        "changed recipe reruns only what depends on it.",
        "tinyminds reproduce --scale tiny --eval-data evaluation_data/ --out runs/repro-tiny\n"
        "tinyminds reproduce --scale mini --corpus babylm-mini/ --eval-data evaluation_data/ "
        "--out runs/repro-mini\n"
        "tinyminds reproduce --scale paper --corpus babylm_data/ --eval-data evaluation_data/ "
        "--out runs/paper --dry-run\n"
        "tinyminds reproduce --scale paper --corpus babylm_data/ --eval-data evaluation_data/ "
        "--out runs/paper --only eval-distilledgpt-44m --max-steps 300",
    )
    sub.add_argument(
        "--scale",
        choices=["tiny", "mini", "paper"],
        default="tiny",
        help="tiny: scaled-down models, 100 steps each, on the embedded corpus (minutes on a "
        "CPU); mini: 4-6 layer, 256-wide models, 600-900 steps each (the mini recipes), on a "
        "babylm-mini-sized corpus (the DistilledGPT-44M chain in about an hour on 2 CPU cores); "
        "paper: the paper's recipes, whole epochs (a GPU). Default tiny",
    )
    sub.add_argument(
        "--corpus",
        metavar="DIR",
        help="corpus folder (BabyLM layout); required for mini and paper, default for tiny: the "
        "embedded Shakespeare corpus",
    )
    sub.add_argument(
        "--eval-data",
        metavar="DIR",
        help="BabyLM evaluation_data/ folder (default: $TINYMINDS_EVAL_DATA, then "
        "RUN_DIR/evaluation_data/); reproduce refuses to start without one unless "
        "--skip-evaluation",
    )
    sub.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    sub.add_argument(
        "--only",
        action="append",
        metavar="STAGE",
        help="run only these stages (comma-separated names or patterns such as 'eval-*'; "
        "repeatable) plus whichever of their dependencies are not finished yet",
    )
    sub.add_argument(
        "--dry-run",
        action="store_true",
        help="print the stage graph with each stage's state (done, to run, partial, stale, "
        "unavailable) and run nothing",
    )
    sub.add_argument(
        "--prune",
        action="store_true",
        help="after the run, delete the stage folders this grid no longer uses (outputs of older "
        "configs or inputs); with --dry-run, list them and their size",
    )
    sub.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="at most N optimizer steps per training stage (0: whole epochs; default: 100 "
        "for tiny, the mini recipes' own budgets, whole epochs for paper); a bounded run for timings or a smoke "
        "test",
    )
    sub.add_argument(
        "--max-items",
        type=int,
        metavar="N",
        help="score at most N pairs per subtask (0: all; default 50 for tiny, all otherwise)",
    )
    sub.add_argument(
        "--set",
        action="append",
        metavar="MODEL.key=value",
        help="override a field of one model's recipe (repeatable), e.g. "
        "distilledgpt-44m.alpha=0.3: that model and what depends on it rerun",
    )
    sub.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S1,S2,...",
        help="train every model once per seed (default: once, with the recipes' seed); the first "
        "seed's stages keep the model's name, the others' end in -seedN (e.g. --seeds 42,7 "
        "--only 'eval-distilledgpt-44m*' runs the DistilledGPT-44M chain twice)",
    )
    sub.add_argument(
        "--glue",
        action="store_true",
        help="also fine-tune DistilledGPT-44M and BabyLlama-58M on GLUE (Table 4): the paper's 32 "
        "epochs at paper scale (hours on a GPU); 1 epoch of 64 examples per task for tiny, 3 epochs "
        "of 2,000 for mini",
    )
    sub.add_argument(
        "--skip-evaluation",
        action="store_true",
        help="train only: no evaluation, comparison or score tables",
    )
    sub.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if any"
    )
    sub.set_defaults(handler=_reproduce)

    sub = command(
        "sweep",
        "Sweep a recipe's settings with Optuna (grid or TPE): resumable, several workers, one "
        "ordinary run folder per trial, a report with the best trial or the Pareto front.",
        "tinyminds sweep space.yaml --out sweeps/alpha-t\n"
        "tinyminds sweep space.yaml --out sweeps/alpha-t --workers 2\n"
        "tinyminds sweep --status sweeps/alpha-t",
    )
    sub.add_argument("space", nargs="?", help="the search space (YAML; see the README)")
    sub.add_argument("--out", help="the sweep folder: journal, trials, report")
    sub.add_argument(
        "--workers", type=int, default=1, help="trials at once on this machine (default 1)"
    )
    sub.add_argument(
        "--threads", type=int, help="torch threads per worker (default: the cores / workers)"
    )
    sub.add_argument(
        "--storage",
        help="an Optuna RDB storage URL instead of the journal file (e.g. postgresql://...)",
    )
    sub.add_argument("--status", metavar="SWEEP_DIR", help="print a sweep's progress and stop")
    sub.set_defaults(handler=_sweep)

    sub = command(
        "upgrade",
        "Rewrite model folders saved by an older tinyminds so that transformers 4.x (the BabyLM "
        "2025 pipeline) loads their tokenizers as transformers 5 does; only tokenizer_config.json "
        "changes, weights are untouched.",
        "tinyminds upgrade runs/gpt2-44m/model\ntinyminds upgrade runs/",
    )
    sub.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="a model folder, or a folder to search"
    )
    sub.set_defaults(handler=_upgrade)

    sub = command(
        "demo",
        "Run the whole pipeline on the embedded Shakespeare corpus with tiny models (a few minutes on a CPU).",
        "tinyminds demo\ntinyminds demo --out /tmp/tinyminds-demo\n"
        "tinyminds demo --eval-data evaluation_data/",
    )
    sub.add_argument(
        "--out", default="tinyminds-demo", help="output folder (default ./tinyminds-demo)"
    )
    sub.add_argument(
        "--eval-data",
        metavar="DIR",
        help="BabyLM evaluation_data/ folder for the evaluation stage (default: "
        "$TINYMINDS_EVAL_DATA, then OUT/evaluation_data/; the stage is skipped, with a note, "
        "where there is none)",
    )
    sub.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "quiet", False):
        set_quiet(True)
    try:
        args.handler(args)
    except UserError as error:
        print(f"tinyminds {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyminds {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
