"""Contrastive and MATE-KD with the teacher cache against the same objectives online (issue 16).

Trains the same student with the same teachers, batch, seed and step budget five ways and prints
the training tokens/s side by side with the two ratios the issue sets as targets:

- ``kd cached``: BabyLlama-58M's distillation from the teacher cache (the reference speed);
- ``contrastive online`` / ``contrastive cached``: ContrastiveLlama's CE + KD + N-pair, the
  teachers run at every step / the ensemble and the teachers' per-chunk representations read from
  the cache; target: cached >= 0.85x ``kd cached``;
- ``mate online`` / ``mate cached``: MATE-KD, the KD term on the original text run online / read
  from the cache (the teachers still score the perturbed text); target: cached >= 1.5x online.

Tokens/s are the engine's: training tokens over the time spent in optimizer steps (generator
steps included for MATE-KD), so the cache build and validation are not counted (the run's whole
time, which counts them, is given beside); each cache's size per token is read from its files
(full size: every chunk of the split has room). Every cache is built in a temporary folder. Run it alone: the figures are CPU-bound and a second job on
the same cores changes them.

Run:  python benchmarks/bench_cached_objectives.py --data PREPARED --teachers T1,T2
      --generator GEN [--student llama-small] [--steps 40] [--batch 32] [--json PATH]
The mini scale's stages of ``tinyminds reproduce --scale mini`` provide all three (see
docs/results/cached-objectives-2026-12-06/README.md for the command used there).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from tinyminds.console import set_quiet
from tinyminds.training.config import DistillConfig
from tinyminds.training.objectives.distillation import distill

VARIANTS: dict[str, dict[str, Any]] = {
    "kd cached": {"objective": "kd", "teacher_cache": True},
    "contrastive online": {"objective": "contrastive", "teacher_cache": False},
    "contrastive cached": {"objective": "contrastive", "teacher_cache": True},
    "mate online": {"objective": "mate", "teacher_cache": False},
    "mate cached": {"objective": "mate", "teacher_cache": True},
}
CONTRASTIVE = {"ce_weight": 0.39, "kd_weight": 0.39, "contrastive_weight": 0.22}


def cache_bytes_per_token(cache_dir: Path) -> float:
    """Bytes per training token of the cache in ``cache_dir``: its arrays' full size (every chunk
    has room) over the tokens of the whole training split."""
    meta = json.loads((cache_dir / "meta.json").read_text(encoding="utf-8"))
    tokens = meta["n_chunks"] * meta["chunk_len"]
    return sum(meta["bytes"].values()) / tokens


def run_variant(
    name: str, common: dict[str, Any], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    settings = {**common, **VARIANTS[name]}
    if settings["objective"] == "contrastive":
        settings.update(CONTRASTIVE)
    if settings["objective"] == "mate":
        settings.update(
            generator=args.generator, generator_steps=2, student_steps=20, generator_lr=1e-4
        )
    cache_dir = work / ("cache-" + name.replace(" ", "-"))
    settings["cache_dir"] = str(cache_dir)
    row: dict[str, Any] = {"variant": name}
    started = time.perf_counter()
    result = distill(DistillConfig(**{**settings, "out": str(work / name.replace(" ", "-"))}))
    row.update(
        seconds=time.perf_counter() - started,
        tokens_per_s=result.tokens_per_second,
        val_ce=result.best_val_ce,
    )
    if settings["teacher_cache"]:
        row["cache_bytes_per_token"] = cache_bytes_per_token(cache_dir)
        filled = np.load(cache_dir / "filled.npy")
        row["cache_chunks"] = int(filled.sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="a prepared data folder")
    parser.add_argument("--teachers", required=True, help="comma-separated teacher folders")
    parser.add_argument("--generator", required=True, help="MATE-KD's masked-LM generator folder")
    parser.add_argument("--student", default="llama-small", help="zoo name of the student")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of every run")
    parser.add_argument("--batch", type=int, default=32, help="chunks per step")
    parser.add_argument("--eval-chunks", type=int, default=64, help="validation chunks")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", help="comma-separated variants (default: all five)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    set_quiet(True)
    common = {
        "data": str(args.data),
        "model": args.student,
        "teachers": args.teachers.split(","),
        "batch_size": args.batch,
        "epochs": 1,
        "max_steps": args.steps,
        "seed": args.seed,
        "lr": 2e-3,
        "warmup_steps": max(1, args.steps // 10),
        "weight_decay": 0.1,
        "temperature": 2.0,
        "kl_reduction": "token",
        "eval_chunks": args.eval_chunks,
        "checkpoint_every": 0,
        "log_every": 10,
        "device": "cpu",
    }
    names = args.only.split(",") if args.only else list(VARIANTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cached-") as tmp:
        for name in names:
            row = run_variant(name, common, Path(tmp), args)
            rows.append(row)
            print(
                f"{name}: {row['tokens_per_s']:,.0f} tokens/s ({row['seconds']:.0f} s)", flush=True
            )
    speed = {row["variant"]: row["tokens_per_s"] for row in rows}
    machine = {
        "device": f"CPU ({platform.processor() or platform.machine()}), "
        f"{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    lines = [
        f"{args.student} student, {args.steps} steps x {args.batch} chunks, seed {args.seed}; "
        f"{machine['device']}, torch {machine['torch']}, transformers {machine['transformers']}",
        "",
        "| variant | tokens/s | vs kd cached | vs same objective online | cache bytes/token "
        "| run s (cache build, validation included) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ratio(value: float, reference: float | None) -> str:
        return f"{value / reference:.2f}x" if reference else "-"

    for row in rows:
        name, value = row["variant"], row["tokens_per_s"]
        online = speed.get(name.replace("cached", "online")) if "cached" in name else None
        size = row.get("cache_bytes_per_token")
        lines.append(
            f"| {name} | {value:,.0f} | {ratio(value, speed.get('kd cached'))} "
            f"| {ratio(value, online)} | {f'{size:,.1f}' if size else '-'} | {row['seconds']:.0f} |"
        )
    targets = []
    if "contrastive cached" in speed and "kd cached" in speed:
        ratio = speed["contrastive cached"] / speed["kd cached"]
        targets.append(f"contrastive cached / kd cached = {ratio:.2f} (target >= 0.85)")
    if "mate cached" in speed and "mate online" in speed:
        ratio = speed["mate cached"] / speed["mate online"]
        targets.append(f"mate cached / mate online = {ratio:.2f} (target >= 1.5)")
    table = "\n".join([*lines, "", *targets]) + "\n"
    print("\n" + table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "machine": machine,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
