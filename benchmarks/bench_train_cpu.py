"""Benchmark one optimizer step of tinyminds' training engine against `transformers.Trainer` on the CPU.

What is compared
----------------
Training throughput (student tokens per second) of the paper's GPT2-44M and Llama-58M (zoo names
``gpt2-44m`` and ``llama-58m``, vocabulary 16,000, chunks of 128 tokens), fp32, on this machine:

* **Trainer (the BabyLlama way)**: `transformers.Trainer` with `TrainingArguments`
  (``per_device_train_batch_size=B``, no evaluation, no saving, ``report_to=[]``, logging off,
  ``use_cpu=True``, cosine schedule, the recipe's lr / warm-up / weight decay / clipping), a `torch.utils.data.Dataset` of the prepared 128-token chunks and
  `DataCollatorForLanguageModeling(mlm=False)`, as BabyLlama's training script does. A callback
  records the time at the end of every optimizer step.
* **tinyminds**: the real `tinyminds.training.engine.train` with the recipe's config and
  ``batch_size=B, max_steps=W+N, precision=fp32, device=cpu, log_every=1`` on the same prepared
  babylm-mini folder. Its per-step times are read back from the run's ``metrics.jsonl`` (with
  ``log_every=1`` each record's ``tokens_per_s`` covers exactly one step); validation, export and
  checkpointing at the end of the run are not timed (nor are they in the Trainer run, which has
  none).

Why it is fair
--------------
Same model class and initial weights (`tinyminds.models.zoo.build_model` after the same seed), same
data (the chunks of one `tinyminds prepare` run of babylm-mini), same batch of B x 128 tokens,
fp32 on both sides, same machine and process, same number of timed steps (N, after W untimed
warm-up steps that absorb allocator and first-call costs). Both timings run from the end of one
optimizer step to the end of the next, so they include data loading, forward, loss, backward,
clipping, the optimizer and the schedule. The Trainer runs with its own default optimizer
(``adamw_torch_fused`` with torch >= 2.8: what a user of the BabyLlama scripts gets today), which is
also what the engine uses (fused `torch.optim.AdamW`), so the loop itself is compared like for like;
``--trainer-optims default,adamw_torch`` adds a run with the unfused optimizer.

Run it:  python benchmarks/bench_train_cpu.py [--models gpt2-44m,llama-58m] [--batch 8]
         [--steps 6] [--warmup 2] [--data PREPARED_DIR | --corpus DIR]
         [--trainer-optims default] [--json PATH]
(about 2 minutes on 2 CPU cores with the defaults, of which ~25 s prepare babylm-mini).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    PrinterCallback,
    Trainer,
    TrainerCallback,
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
from tinyminds.recipes import load_train_config
from tinyminds.training.config import TrainConfig
from tinyminds.training.engine import train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "babylm-mini.tar.gz"
DEFAULT_MODELS = "gpt2-44m,llama-58m"


class ChunkDataset(torch.utils.data.Dataset):
    """The prepared chunks as BabyLlama's dataset hands them out: one int64 tensor per chunk."""

    def __init__(self, chunks: np.ndarray) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.chunks[index].astype(np.int64))


class StepTimer(TrainerCallback):
    """Records `time.perf_counter()` when training begins and at the end of every optimizer step."""

    def __init__(self) -> None:
        self.begin = 0.0
        self.step_ends: list[float] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.begin = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.step_ends.append(time.perf_counter())


def timed_seconds(step_ends: list[float], begin: float, warmup: int, steps: int) -> float:
    """Wall time of steps warmup+1 .. warmup+steps, from step ends."""
    start = step_ends[warmup - 1] if warmup else begin
    return step_ends[warmup + steps - 1] - start


def metrics_step_seconds(run_dir: Path, warmup: int, steps: int, tokens_per_step: int) -> float:
    """Wall time of steps warmup+1 .. warmup+steps of an engine run, from ``metrics.jsonl``.

    Each train record covers the steps since the record before it, and its ``tokens_per_s`` gives
    their time back. The run must log at steps ``warmup`` and ``warmup + steps`` (``log_every``
    dividing both; ``log_every=1`` times every step on its own).
    """
    records = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    speed = {r["step"]: r["tokens_per_s"] for r in records if r.get("kind") == "train"}
    ends = sorted(speed)
    if (warmup and warmup not in speed) or warmup + steps not in speed:
        raise ValueError(f"the run logged no train record at step {warmup} or {warmup + steps}")
    seconds, previous = 0.0, 0
    for end in ends:
        if warmup <= previous and end <= warmup + steps:
            seconds += (end - previous) * tokens_per_step / speed[end]
        previous = end
    return seconds


def machine_info() -> dict[str, Any]:
    """CPU count, versions and platform of this machine (recorded with every result)."""
    return {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def recipe_config(model: str) -> TrainConfig:
    """The recipe of the same name (lr, warm-up, weight decay, clipping), or the defaults."""
    try:
        return load_train_config(model)
    except Exception:
        return TrainConfig(model=model)


def trainer_arguments(
    config: TrainConfig,
    out: Path,
    *,
    batch_size: int,
    grad_accum: int,
    max_steps: int,
    eval_steps: int = 0,
    gpu: bool = False,
    **extra: Any,
) -> TrainingArguments:
    """`TrainingArguments` carrying a tinyminds config's optimisation settings (lr, cosine warm-up,
    weight decay, Adam, clipping, seed) on the CPU in fp32 (``gpu``: on the GPU in fp16), with no
    saving or logging; evaluation every ``eval_steps`` steps (0: none)."""
    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_eps,
        max_grad_norm=config.grad_clip,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps or None,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=not gpu,
        fp16=gpu,
        bf16=False,
        seed=config.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **extra,
    )


def run_trainer(
    model_name: str, data_dir: Path, work: Path, batch: int, warmup: int, steps: int, optim: str
) -> dict[str, Any]:
    """Train with `transformers.Trainer` for warmup + steps steps; time the last ``steps``."""
    recipe = recipe_config(model_name)
    data = load_prepared(data_dir)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    torch.manual_seed(recipe.seed)
    model = build_model(get_spec(model_name), data.vocab_size)
    parameters = sum(p.numel() for p in model.parameters())
    extra = {"optim": optim} if optim else {}
    args = trainer_arguments(
        recipe,
        work / f"trainer-{model_name}",
        batch_size=batch,
        grad_accum=1,
        max_steps=warmup + steps,
        **extra,
    )
    timer = StepTimer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ChunkDataset(data.chunks("train")),
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics with logging off
    trainer.train()
    seconds = timed_seconds(timer.step_ends, timer.begin, warmup, steps)
    tokens = steps * batch * data.chunk_size
    return {
        "way": "transformers.Trainer" + ("" if optim else " (default optim)"),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "parameters": parameters,
        "timed_steps": steps,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "seconds_per_step": seconds / steps,
    }


def run_tinyminds(
    model_name: str, data_dir: Path, work: Path, batch: int, warmup: int, steps: int
) -> dict[str, Any]:
    """Train with `tinyminds.training.engine.train` for warmup + steps steps; time the last ``steps``."""
    config = dataclasses.replace(
        recipe_config(model_name),
        model=model_name,
        data=str(data_dir),
        out=str(work / f"tinyminds-{model_name}"),
        batch_size=batch,
        grad_accum=1,
        epochs=1,
        max_steps=warmup + steps,
        eval_chunks=64,
        checkpoint_every=0,
        log_every=1,
        precision="fp32",
        device="cpu",
        compile=False,
        tensorboard=False,
        wandb=False,
    )
    result = train(config)
    tokens_per_step = batch * load_prepared(data_dir).chunk_size
    seconds = metrics_step_seconds(result.run_dir, warmup, steps, tokens_per_step)
    return {
        "way": "tinyminds engine.train",
        "optimizer": "adamw_torch_fused",
        "parameters": result.parameters,
        "timed_steps": steps,
        "seconds": seconds,
        "tokens_per_second": steps * tokens_per_step / seconds,
        "seconds_per_step": seconds / steps,
        "train_result_tokens_per_second_all_steps": result.tokens_per_second,
    }


def extract_and_prepare(archive: Path, corpus: Path | None, work: Path) -> tuple[Path, float]:
    """A prepared babylm-mini folder in ``work`` (extracting the archive unless a corpus is given)."""
    if corpus is None:
        if not archive.is_file():
            raise SystemExit(f"no corpus: pass --data, or --corpus DIR ({archive} is absent)")
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(work / "corpus", filter="data")
        (corpus,) = [p for p in (work / "corpus").iterdir() if p.is_dir()]
    started = time.perf_counter()
    prepare(corpus, work / "prepared", PrepareOptions())
    return work / "prepared", time.perf_counter() - started


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\nbatch {result['batch']} x {result['chunk_size']} tokens, fp32, "
        f"{result['timed_steps']} timed steps after {result['warmup_steps']} warm-up steps, "
        f"{result['machine']['cpus']} CPUs, torch {result['machine']['torch']}, "
        f"{result['machine']['torch_threads']} torch threads"
    )
    header = ("model", "parameters", "way", "optimizer", "s/step", "tokens/s", "ratio")
    lines = [header]
    for model in result["models"]:
        for i, row in enumerate(model["rows"]):
            lines.append(
                (
                    model["name"],
                    f"{row['parameters']:,}",
                    row["way"],
                    row["optimizer"],
                    f"{row['seconds_per_step']:.3f}",
                    f"{row['tokens_per_second']:,.0f}",
                    "1.00 (baseline)" if i == 0 else f"{row['ratio']:.2f}",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 2, 3}
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for line in lines[1:]:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        "ratio = tokens/s / tokens/s of the first Trainer row of the model (above 1: faster "
        "than the Trainer as configured there)"
    )
    same = [
        f"{m['name']} {m['rows'][-1]['ratio_vs_trainer_same_optimizer']:.2f}"
        for m in result["models"]
        if "ratio_vs_trainer_same_optimizer" in m["rows"][-1]
    ]
    if same:
        print("tinyminds / Trainer with the same optimizer (fused AdamW): " + ", ".join(same))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated zoo names")
    parser.add_argument("--batch", type=int, default=8, help="chunks of 128 tokens per step")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--data", type=Path, help="a prepared data folder (skips preparation)")
    parser.add_argument(
        "--corpus", type=Path, help="corpus folder to prepare (default: babylm-mini)"
    )
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="babylm-mini archive")
    parser.add_argument(
        "--trainer-optims",
        default="default",
        help="TrainingArguments.optim of each Trainer run, comma-separated; 'default' keeps the "
        "Trainer's own default (the ratio's baseline; fused AdamW, as the engine uses)",
    )
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit("--steps must be at least 1 and --warmup at least 0")
    optims = [o.strip() for o in args.trainer_optims.split(",") if o.strip()] or ["default"]
    set_quiet(True)
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory(prefix="tm-bench-train-") as tmp:
        work = Path(tmp)
        prepare_seconds = 0.0
        data_dir = args.data
        if data_dir is None:
            data_dir, prepare_seconds = extract_and_prepare(args.archive, args.corpus, work)
        data = load_prepared(data_dir)
        result: dict[str, Any] = {
            "machine": machine_info(),
            "data": str(args.data) if args.data else "babylm-mini (prepared in a temp folder)",
            "prepare_seconds": prepare_seconds,
            "train_chunks": int(data.chunks("train").shape[0]),
            "vocab_size": data.vocab_size,
            "batch": args.batch,
            "chunk_size": data.chunk_size,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "models": [],
        }
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            get_spec(name)  # fail early on an unknown name
            trainer_rows = [
                run_trainer(
                    name,
                    data_dir,
                    work,
                    args.batch,
                    args.warmup,
                    args.steps,
                    "" if optim == "default" else optim,
                )
                for optim in optims
            ]
            tinyminds_row = run_tinyminds(name, data_dir, work, args.batch, args.warmup, args.steps)
            base = trainer_rows[0]["tokens_per_second"]
            for row in [*trainer_rows, tinyminds_row]:
                row["ratio"] = row["tokens_per_second"] / base
            same = [r for r in trainer_rows if r["optimizer"] == "adamw_torch_fused"]
            if same:
                tinyminds_row["ratio_vs_trainer_same_optimizer"] = (
                    tinyminds_row["tokens_per_second"] / same[0]["tokens_per_second"]
                )
            result["models"].append({"name": name, "rows": [*trainer_rows, tinyminds_row]})
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
