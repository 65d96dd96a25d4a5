"""Benchmark one distillation step (DistilledGPT-44M) three ways: the BabyLlama Trainer and tinyminds.

What is compared
----------------
Student tokens per second of one optimizer step of the DistilledGPT-44M setup (SPEC §3, §5): a
GPT2-44M student (zoo name ``gpt2-44m``) distilled from a GPT2-44M and a Llama-60M teacher
(``gpt2-44m``, ``llama-60m``), vocabulary 16,000, chunks of 128 tokens, with the paper's KD loss
``0.5 * CE + 0.5 * T^2 * KL(teachers || student)``, T = 2, the teachers' logits averaged, forward
KL, reduced as BabyLlama does (``KLDivLoss(reduction="batchmean")`` on ``[B, L, V]``: summed over
the 128 positions, averaged over chunks; tinyminds' ``kl_reduction: sequence``):

* **(a) transformers.Trainer, the BabyLlama way**: a `Trainer` subclass whose ``compute_loss``
  runs the student on the batch (its loss is the CE), runs both teachers online (eval mode, under
  ``torch.no_grad``), averages their logits and adds the temperature-scaled KL exactly as above,
  on the full ``[B, L, V]`` tensors. The Trainer's default optimizer (fused AdamW with
  torch >= 2.8), cosine schedule and the recipe's lr / warm-up / weight decay / clipping;
  ``use_cpu=True`` on the CPU, ``fp16=True`` on a GPU as BabyLlama trains (the teachers stay
  float32 there, as in BabyLlama's script: only the student's forward is autocast). The teachers
  get the input ids only (a teacher given the labels would also compute a CE nobody reads), which
  can only make (a) faster.
* **(b) tinyminds, teachers online**: the real
  `tinyminds.training.objectives.distillation.distill` with the ``distilledgpt-44m`` recipe and
  ``teacher_cache=false``; precision ``auto`` (fp32 on the CPU, bf16 autocast and bf16 teachers on
  a GPU).
* **(c) tinyminds, teacher cache**: the same with ``teacher_cache=true`` and the cache users get
  by default (``cache_selection=sample, cache_k=128``; ``--cache-selection`` and ``--cache-k``
  pick another, e.g. ``topk`` and ``32``, the cache of the first results in the README). The
  cache is built *before* timing by a first one-step ``distill`` run
  (its build time, from the cache's ``meta.json``, and its size are reported on their own); the
  timed run finds it by its content key in the same ``cache_dir`` and reuses it (checked: its
  ``meta.json`` must not change).

Why it is fair
--------------
Same student class and initial weights (`tinyminds.models.zoo.build_model` after the recipe's
seed), the same two teacher folders (random weights: speed does not depend on them), the same
prepared chunks, the same batch of B x 128 tokens, the same number of timed steps N after the same
W untimed warm-up steps, on the same machine, in one process, one way after the other. Every
timing runs from the end of one optimizer step to the end of the next: data, student forward,
teachers (or the cache lookup), CE + KL, backward, clipping, AdamW, schedule. tinyminds' per-step
times are read back from ``metrics.jsonl``, logged every gcd(W, N) steps (a log waits for the
GPU; between logs tinyminds queues a step while the GPU computes the one before, as in real runs);
the Trainer's come from a callback at the end of each step (after a CUDA synchronize on a GPU; the
Trainer reads its loss back at every step anyway, to filter NaN/inf from its logs). Validation,
export and checkpoints are never timed. On a GPU the precisions differ by design: each side runs
as its users run it (BabyLlama: fp16 AMP; tinyminds: bf16).

The benchmark builds the teacher cache of the whole training split (a run computes only the chunks
it reads; building them all measures the build), so on the CPU the default uses the first 1% of
the lines of every babylm-mini file (``--train-fraction 0.01``: 406 chunks, ~35 s of teacher
forwards), tokenized with the 16,000-token tokenizer trained on all of babylm-mini; all three ways
use that same prepared folder. The step time does not depend on how many chunks there are.

A fourth row, the student alone (the engine with its plain CE objective, no teachers), shows the
floor of any distillation step. ``--repeat R`` runs all ways R times and keeps each one's best.

Run it:  python benchmarks/bench_distill.py [--batch 8] [--steps 6] [--warmup 2] [--repeat 1]
         [--train-fraction 0.01] [--data PREPARED_DIR | --corpus DIR] [--compile]
         [--out-table PATH] [--json PATH] [--dry-run]
         python benchmarks/bench_distill.py --gpu [--compile] --out-table results.md
(CPU defaults: about 2 minutes on 2 idle cores, ~30 s of which prepare babylm-mini and ~35 s
build the cache; ``--repeat 2`` about 3 minutes. ``--gpu``: batch 32, 200 timed steps after 30,
all of babylm-mini, sized for one H100 in under 5 minutes; run on an H200 on 2026-11-28.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_train_cpu import (
    DEFAULT_ARCHIVE,
    ChunkDataset,
    StepTimer,
    extract_and_prepare,
    machine_info,
    metrics_step_seconds,
    timed_seconds,
    trainer_arguments,
)
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    PrinterCallback,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from tinyminds.console import set_quiet
from tinyminds.data.chunks import load_prepared
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.data.tokenizer import load_tokenizer
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.recipes import load_distill_config
from tinyminds.training.config import DistillConfig
from tinyminds.training.engine import resolve_precision, train
from tinyminds.training.objectives import SetupContext
from tinyminds.training.objectives.distillation import DistillationObjective, distill
from tinyminds.training.teacher_cache import META_FILE
from tinyminds.training.teachers import load_teachers

RECIPE = "distilledgpt-44m"
STUDENT = "gpt2-44m"
TEACHERS = "gpt2-44m,llama-60m"
CACHE_DEFAULTS = DistillConfig(model=STUDENT)
"""tinyminds' defaults, for the cache of (c)."""

PRESETS: dict[str, dict[str, Any]] = {
    # Sized for the 2-core CPU: a few minutes in all.
    "cpu": {"batch": 8, "steps": 6, "warmup": 2, "train_fraction": 0.01},
    # Sized for one H100 in under 5 minutes, with or without --compile (run on an H200 on
    # 2026-11-28 with --steps 60 --warmup 15).
    "gpu": {"batch": 32, "steps": 200, "warmup": 30, "train_fraction": 1.0},
}

# The targets: student tokens/s of (b) and (c) as a multiple of (a).
TARGETS = {"cpu": {"b": 1.0, "c": 3.0}, "h100": {"b": 2.0, "c": 5.0}}

WAY_NAMES = {
    "a": "(a) transformers.Trainer + compute_loss, teachers online (BabyLlama)",
    "b": "(b) tinyminds distill, teachers online",
    "c": "(c) tinyminds distill, teacher cache",
    "floor": "floor: the student alone, no teachers (tinyminds train, CE only)",
}


# --- data and teachers -----------------------------------------------------------------------


def cut_corpus(corpus: Path, dest: Path, fraction: float) -> None:
    """Copy ``corpus`` into ``dest``, keeping the first ``fraction`` of every file's lines."""
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        lines = path.read_bytes().splitlines(keepends=True)
        target = dest / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"".join(lines[: max(1, math.ceil(len(lines) * fraction))]))


def extract_corpus(archive: Path, work: Path) -> Path:
    """The corpus folder of the babylm-mini archive, extracted into ``work``."""
    if not archive.is_file():
        raise SystemExit(f"no corpus: pass --corpus DIR ({archive} is absent)")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work / "corpus", filter="data")
    (corpus,) = [p for p in (work / "corpus").iterdir() if p.is_dir()]
    return corpus


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[Path, Path, float]:
    """(full prepared folder, the folder the benchmark trains on, seconds spent preparing).

    The full folder is ``--data`` or babylm-mini prepared here; with ``--train-fraction`` below 1 the
    benchmark's folder is a cut of the corpus tokenized with the full folder's tokenizer.
    """
    started = time.perf_counter()
    corpus = args.corpus
    if args.data is not None:
        full = args.data
    else:
        full, _ = extract_and_prepare(args.archive, args.corpus, work)
        if corpus is None:
            (corpus,) = [p for p in (work / "corpus").iterdir() if p.is_dir()]
    if args.train_fraction >= 1.0:
        return full, full, time.perf_counter() - started
    if corpus is None:
        corpus = extract_corpus(args.archive, work)
    cut_corpus(corpus, work / "corpus-cut", args.train_fraction)
    tokenizer = load_prepared(full).tokenizer_dir
    prepare(work / "corpus-cut", work / "prepared-cut", PrepareOptions(tokenizer=str(tokenizer)))
    return full, work / "prepared-cut", time.perf_counter() - started


def save_teachers(names: list[str], data_dir: Path, work: Path, seed: int) -> list[Path]:
    """Randomly initialised teachers saved as Hugging Face folders with the data's tokenizer."""
    data = load_prepared(data_dir)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    folders = []
    for i, name in enumerate(names):
        torch.manual_seed(seed + 1 + i)
        model = build_model(get_spec(name), data.vocab_size)
        folder = work / "teachers" / f"{i}-{name}"
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        folders.append(folder)
    return folders


# --- (a) the BabyLlama way ---------------------------------------------------------------------


class BabyLlamaDistillTrainer(Trainer):
    """`Trainer` with BabyLlama's distillation loss in ``compute_loss`` (teachers run online)."""

    loss_is_scaled_for_ga = False  # a per-batch mean; no gradient accumulation here anyway

    def __init__(
        self, *args: Any, teachers: list[nn.Module], alpha: float, temperature: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teachers = [teacher.to(self.args.device).eval() for teacher in teachers]
        self.alpha = alpha
        self.temperature = temperature

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        student = model(**inputs)  # the labels are in the batch: student.loss is the CE
        with torch.no_grad():
            logits = [
                teacher(
                    input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
                ).logits
                for teacher in self.teachers
            ]
            teacher_logits = torch.stack(logits).mean(dim=0)
        t = self.temperature
        kl = nn.KLDivLoss(reduction="batchmean")(
            F.log_softmax(student.logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1)
        )
        loss = self.alpha * student.loss + (1.0 - self.alpha) * t**2 * kl
        return (loss, student) if return_outputs else loss


class SyncedStepTimer(StepTimer):
    """`StepTimer` that waits for the GPU first, so that a step's time is its real end."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if torch.cuda.is_available() and not args.use_cpu:
            torch.cuda.synchronize()
        super().on_step_end(args, state, control, **kwargs)


def run_babyllama(
    recipe: DistillConfig,
    teacher_dirs: list[Path],
    data_dir: Path,
    work: Path,
    batch: int,
    warmup: int,
    steps: int,
    gpu: bool,
) -> dict[str, Any]:
    """(a): distill with the Trainer subclass for warmup + steps steps; time the last ``steps``."""
    data = load_prepared(data_dir)
    torch.manual_seed(recipe.seed)
    student = build_model(get_spec(recipe.model), data.vocab_size)
    teachers = [AutoModelForCausalLM.from_pretrained(str(d)) for d in teacher_dirs]
    args = trainer_arguments(
        recipe,
        work / "trainer-distill",
        batch_size=batch,
        grad_accum=1,
        max_steps=warmup + steps,
        gpu=gpu,
    )
    timer = SyncedStepTimer()
    trainer = BabyLlamaDistillTrainer(
        model=student,
        args=args,
        train_dataset=ChunkDataset(data.chunks("train")),
        data_collator=DataCollatorForLanguageModeling(
            tokenizer=load_tokenizer(data.tokenizer_dir), mlm=False
        ),
        callbacks=[timer],
        teachers=teachers,
        alpha=recipe.alpha,
        temperature=recipe.temperature,
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics with logging off
    trainer.train()
    seconds = timed_seconds(timer.step_ends, timer.begin, warmup, steps)
    return {
        "way": WAY_NAMES["a"],
        "precision": "fp16 AMP (teachers fp32)" if gpu else "fp32",
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "seconds": seconds,
    }


# --- (b), (c) tinyminds ------------------------------------------------------------------------


def tinyminds_config(
    recipe: DistillConfig,
    teacher_dirs: list[Path],
    data_dir: Path,
    out: Path,
    *,
    batch: int,
    max_steps: int,
    warmup: int,
    cache: bool,
    cache_dir: Path,
    device: str,
    compile_model: bool,
    cache_selection: str = CACHE_DEFAULTS.cache_selection,
    cache_k: int = CACHE_DEFAULTS.cache_k,
) -> DistillConfig:
    """The recipe with the benchmark's data, teachers, batch, steps and cache settings.

    It logs every gcd(warmup, timed steps) steps: often enough to time the timed steps apart
    from the warm-up, no more (a log reads numbers back from the GPU, so the CPU waits for it
    there: tinyminds otherwise queues the next step while the GPU computes, as a real run does;
    the Trainer reads its loss back at every step by itself).
    """
    return dataclasses.replace(
        recipe,
        teachers=[str(d) for d in teacher_dirs],
        data=str(data_dir),
        out=str(out),
        batch_size=batch,
        grad_accum=1,
        epochs=1,
        max_steps=max_steps,
        eval_chunks=2 * batch,
        eval_batch_size=batch,
        checkpoint_every=0,
        log_every=math.gcd(warmup, max_steps - warmup) or max_steps,
        precision="auto",
        device=device,
        compile=compile_model,
        tensorboard=False,
        wandb=False,
        teacher_cache=cache,
        cache_k=cache_k,
        cache_selection=cache_selection,
        cache_dir=str(cache_dir),
    )


def run_tinyminds(config: DistillConfig, warmup: int, steps: int, way: str) -> dict[str, Any]:
    """(b) or (c): `distill` for warmup + steps steps; the last ``steps`` from metrics.jsonl.

    ``way="floor"`` runs the engine with its plain cross-entropy objective instead (no teachers):
    the floor of any KD step, shown for reference.
    """
    result = train(config) if way == "floor" else distill(config)
    tokens_per_step = config.batch_size * load_prepared(Path(config.data)).chunk_size
    gpu = torch.cuda.is_available() and config.device != "cpu"
    return {
        "way": WAY_NAMES[way]
        + (f" ({config.cache_selection}, k={config.cache_k})" if way == "c" else "")
        + (", compiled" if config.compile else ""),
        "precision": ("bf16 autocast" if gpu else "fp32")
        + ("" if way == "floor" or not gpu else " (teachers bf16)"),
        "optimizer": "adamw_torch_fused",
        "seconds": metrics_step_seconds(result.run_dir, warmup, steps, tokens_per_step),
    }


def build_cache(config: DistillConfig) -> dict[str, Any]:
    """Build the teacher cache of the whole training split (a run reads only the chunks it
    needs; the benchmark builds them all to measure the build); its build time and size."""
    started = time.perf_counter()
    data = load_prepared(Path(config.data))
    device = torch.device(
        config.device
        if config.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    objective = DistillationObjective(
        load_teachers(config.teachers, data, config.model), config.teachers, config
    )
    objective.setup(
        SetupContext(
            device=device,
            amp_dtype=resolve_precision(config.precision, device),
            rank=0,
            world_size=1,
            barrier=lambda: None,
            data=data,
            run_dir=Path(config.out),
            train_rows=np.arange(len(data.chunks("train"))),
        )
    )
    wall = time.perf_counter() - started
    meta = json.loads((Path(config.cache_dir) / META_FILE).read_text(encoding="utf-8"))
    tokens = meta["n_chunks"] * meta["chunk_len"]
    # Bytes per token from the stored dtypes: k ids + k log-probs + one rest value.
    bytes_per_token = sum(
        np.dtype(meta["dtypes"][name]).itemsize * (meta["k"] if len(shape) == 3 else 1)
        for name, shape in meta["shapes"].items()
    )
    return {
        "selection": config.cache_selection,
        "k": meta["k"],
        "tokens": tokens,
        "build_seconds": meta["seconds"],
        "build_tokens_per_second": tokens / max(meta["seconds"], 1e-9),
        "build_run_wall_seconds": wall,
        "bytes_per_token": bytes_per_token,
        "mb_per_million_tokens": bytes_per_token,  # 1e6 tokens x B bytes = B MB
        "megabytes": sum(meta["bytes"].values()) / 1e6,
    }


# --- report ------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]], left: set[int]) -> str:
    """A padded Markdown table; columns not in ``left`` are right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(
        "-" * w if i in left else "-" * (w - 1) + ":" for i, w in enumerate(widths)
    )
    return "\n".join([line(header), rule + " |", *(line(r) for r in rows)])


def report(result: dict[str, Any]) -> str:
    """The settings line, the speed table, the cache table and the targets, as Markdown."""
    m = result["machine"]
    where = m.get("gpu") or f"{m['cpus']} CPUs, {m['torch_threads']} torch threads"
    parts = [
        f"Distillation step of the DistilledGPT-44M setup: student {result['student']}, teachers "
        f"{' + '.join(result['teachers'])}, vocabulary {result['vocab_size']:,}, batch "
        f"{result['batch']} x {result['chunk_size']} tokens, {result['timed_steps']} timed steps "
        f"after {result['warmup_steps']} warm-up steps"
        + (f", best of {result['repeat']} rounds" if result["repeat"] > 1 else "")
        + f", {result['train_chunks']:,} training "
        f"chunks; {where}, torch {m['torch']}",
        "",
        markdown_table(
            ["way", "precision", "student tokens/s", "s/step", "ratio vs (a)"],
            [
                [
                    r["way"],
                    r["precision"],
                    f"{r['tokens_per_second']:,.0f}",
                    f"{r['seconds_per_step']:.3f}",
                    f"{r['ratio']:.2f}x",
                ]
                for r in result["ways"]
            ],
            left={0, 1},
        ),
        "",
    ]
    c = result["cache"]
    cache_rows = [
        [
            f"{c['selection']}, k={c['k']}",
            f"{c['tokens']:,}",
            f"{c['build_seconds']:.1f}",
            f"{c['build_tokens_per_second']:,.0f}",
            f"{c['bytes_per_token']:.0f}",
            f"{c['mb_per_million_tokens']:.0f}",
            f"{c['megabytes']:,.1f}",
        ]
    ]
    parts.append(
        markdown_table(
            [
                "teacher cache",
                "tokens",
                "cache build s",
                "build tokens/s",
                "bytes/token",
                "MB per million tokens",
                "MB",
            ],
            cache_rows,
            left={0},
        )
    )
    full = result.get("full_train_tokens")
    if full and full != c["tokens"]:
        parts.append(
            f"\nAt this rate the cache of all {full:,} training tokens of the full prepared corpus "
            f"would take about {full / c['build_tokens_per_second']:,.0f} s and "
            f"{full * c['bytes_per_token'] / 1e6:,.0f} MB."
        )
    t = result["targets"]
    parts += [
        "",
        markdown_table(
            [f"target ({t['machine']})", "needed", "measured", "met"],
            [
                [
                    f"{row['way']} >= {row['needed']:g}x (a)",
                    f"{row['needed']:.2f}x",
                    f"{row['measured']:.2f}x",
                    "yes" if row["met"] else "no",
                ]
                for row in t["rows"]
            ],
            left={0, 3},
        ),
    ]
    if t.get("note"):
        parts.append(t["note"])
    return "\n".join(parts) + "\n"


def targets(ways: dict[str, dict[str, Any]], device: str, gpu_name: str) -> dict[str, Any]:
    """The issue's targets for this machine, and whether each is met."""
    kind = "cpu" if device == "cpu" else "h100"
    note = ""
    if kind == "h100" and "H100" not in gpu_name:
        note = f"(this GPU is {gpu_name}: the H100 targets are shown for reference)"
    rows = [
        {
            "way": f"({w})",
            "needed": needed,
            "measured": ways[w]["ratio"],
            "met": ways[w]["ratio"] >= needed,
        }
        for w, needed in TARGETS[kind].items()
    ]
    return {"machine": "CPU" if kind == "cpu" else "H100", "rows": rows, "note": note}


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--gpu", action="store_true", help="the one-H100 preset (batch 32, 200 steps, all data)"
    )
    parser.add_argument("--batch", type=int, help="chunks of 128 tokens per step (CPU: 8)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps (CPU: 6)")
    parser.add_argument("--warmup", type=int, help="untimed steps before them (CPU: 2)")
    parser.add_argument(
        "--train-fraction",
        type=float,
        help="share of each corpus file's lines to train on and cache (CPU: 0.01, --gpu: 1)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile=true for the tinyminds runs (b) and (c)"
    )
    parser.add_argument(
        "--cache-selection",
        choices=("sample", "topk", "hybrid"),
        default=CACHE_DEFAULTS.cache_selection,
        help=f"the cache of (c) (default: tinyminds' default, {CACHE_DEFAULTS.cache_selection})",
    )
    parser.add_argument(
        "--cache-k",
        type=int,
        default=CACHE_DEFAULTS.cache_k,
        help=f"tokens per position in the cache of (c) (default {CACHE_DEFAULTS.cache_k})",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all ways; each keeps its best (default 1)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--student", default=STUDENT, help="zoo name of the student")
    parser.add_argument("--teachers", default=TEACHERS, help="zoo names, comma-separated")
    parser.add_argument(
        "--data", type=Path, help="a prepared data folder (skips preparing babylm-mini)"
    )
    parser.add_argument(
        "--corpus", type=Path, help="corpus folder to prepare or cut (default: babylm-mini)"
    )
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="babylm-mini archive")
    parser.add_argument("--out-table", type=Path, help="also write the tables to this file")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved settings and stop"
    )
    args = parser.parse_args(argv)
    preset = PRESETS["gpu" if args.gpu else "cpu"]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device == "auto":
        args.device = "cuda" if args.gpu or torch.cuda.is_available() else "cpu"
    if args.gpu and args.device != "cuda":
        parser.error("--gpu needs --device cuda (or auto)")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.repeat < 1:
        parser.error("--batch, --steps and --repeat must be at least 1, --warmup at least 0")
    if args.cache_k < 1:
        parser.error(f"--cache-k must be at least 1, got {args.cache_k}")
    if not 0.0 < args.train_fraction <= 1.0:
        parser.error("--train-fraction must be in (0, 1]")
    for name in [args.student, *args.teachers.split(",")]:
        try:
            get_spec(name.strip())
        except Exception as error:
            parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    teacher_names = [t.strip() for t in args.teachers.split(",") if t.strip()]
    if args.dry_run:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        print(json.dumps({**settings, "teachers": teacher_names}, indent=2))
        return
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda / --gpu: no CUDA GPU on this machine")
    set_quiet(True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    total_steps = args.warmup + args.steps

    with tempfile.TemporaryDirectory(prefix="tm-bench-distill-") as tmp:
        work = Path(tmp)
        full_dir, data_dir, prepare_seconds = prepare_data(args, work)
        # Tokenization is done: no "process forked after parallelism" warnings from compile workers.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        data = load_prepared(data_dir)
        n_chunks = int(data.chunks("train").shape[0])
        if n_chunks < total_steps * args.batch:
            raise SystemExit(
                f"{n_chunks} training chunks are fewer than the {total_steps} x {args.batch} "
                "chunks of the run (the timed steps must not cross an epoch end): raise "
                "--train-fraction"
            )
        recipe = dataclasses.replace(load_distill_config(RECIPE), model=args.student)
        teacher_dirs = save_teachers(teacher_names, data_dir, work, recipe.seed)
        cached = tinyminds_config(
            recipe,
            teacher_dirs,
            data_dir,
            work / "cache-build",
            batch=args.batch,
            max_steps=total_steps,
            warmup=args.warmup,
            cache=True,
            cache_dir=work / "teacher-cache",
            device=args.device,
            compile_model=args.compile,
            cache_selection=args.cache_selection,
            cache_k=args.cache_k,
        )
        cache = build_cache(cached)
        meta_path = Path(cached.cache_dir) / META_FILE
        meta_stamp = meta_path.stat().st_mtime_ns
        online = dataclasses.replace(cached, teacher_cache=False)

        # Every round runs the four ways one after the other; each way keeps its best round.
        rows: dict[str, dict[str, Any]] = {}
        for r in range(args.repeat):
            measured = {
                "a": run_babyllama(
                    recipe,
                    teacher_dirs,
                    data_dir,
                    work / f"round{r}",
                    args.batch,
                    args.warmup,
                    args.steps,
                    gpu,
                ),
                "b": run_tinyminds(
                    dataclasses.replace(online, out=str(work / f"round{r}" / "online")),
                    args.warmup,
                    args.steps,
                    "b",
                ),
                "c": run_tinyminds(
                    dataclasses.replace(cached, out=str(work / f"round{r}" / "cache")),
                    args.warmup,
                    args.steps,
                    "c",
                ),
                "floor": run_tinyminds(
                    dataclasses.replace(online, out=str(work / f"round{r}" / "floor")),
                    args.warmup,
                    args.steps,
                    "floor",
                ),
            }
            for way, row in measured.items():
                best = rows.setdefault(way, {**row, "seconds_all_rounds": []})
                best["seconds_all_rounds"].append(row["seconds"])
                best["seconds"] = min(best["seconds_all_rounds"])
        if meta_path.stat().st_mtime_ns != meta_stamp:
            raise RuntimeError("a timed cached run rebuilt the teacher cache instead of reusing it")

        tokens_per_step = args.batch * data.chunk_size
        for row in rows.values():
            row["seconds_per_step"] = row["seconds"] / args.steps
            row["tokens_per_second"] = args.steps * tokens_per_step / row["seconds"]
        for row in rows.values():
            row["ratio"] = row["tokens_per_second"] / rows["a"]["tokens_per_second"]
        machine = machine_info()
        gpu_name = torch.cuda.get_device_name() if gpu else ""
        if gpu:
            machine["gpu"] = gpu_name
        full_tokens = int(load_prepared(full_dir).chunks("train").size)
        result: dict[str, Any] = {
            "machine": machine,
            "data": str(args.data or args.corpus or "babylm-mini (prepared in a temp folder)"),
            "train_fraction": args.train_fraction,
            "prepare_seconds": prepare_seconds,
            "train_chunks": n_chunks,
            "full_train_tokens": full_tokens,
            "vocab_size": data.vocab_size,
            "student": args.student,
            "teachers": teacher_names,
            "batch": args.batch,
            "chunk_size": data.chunk_size,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "repeat": args.repeat,
            "compile": args.compile,
            "cache_selection": args.cache_selection,
            "cache_k": args.cache_k,
            "loss": {
                "alpha": recipe.alpha,
                "temperature": recipe.temperature,
                "ensemble": recipe.ensemble,
                "kl_direction": recipe.kl_direction,
                "kl_reduction": recipe.kl_reduction,
            },
            "ways": [rows[w] for w in ("a", "b", "c", "floor")],
            "cache": cache,
            "targets": targets(rows, args.device, gpu_name),
        }
    text = report(result)
    print("\n" + text, end="")
    if args.out_table:
        args.out_table.write_text(text, encoding="utf-8")
        print(f"wrote {args.out_table}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
