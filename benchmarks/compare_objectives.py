"""Plain KD vs contrastive vs MATE-KD on babylm-mini: same teachers, steps and seed, one table.

Prepares babylm-mini (16,000-token BPE; or reads --data), trains two tiny teachers (a GPT-2 and a
Llama) and an electra-tiny masked-LM generator (or reads --teacher-dirs / --generator-dir), then
distills the teachers into the same student three times, online (no teacher cache, so that the
three runs differ only in their objective): `objective=kd`, `objective=contrastive` and
`objective=mate`. Prints each stage's time as it ends, then a table of each student's validation
CE, its time and student tokens/s, and for MATE-KD a summary of the divergence curve:
``kd_adv / kd_orig`` (T^2 KL on the generator's perturbed text over T^2 KL on the original text,
from the training records) first / mean / last, and the generator's own divergence at its first
and last step. A ratio above 1 means the generator finds text on which the student imitates the
teachers less well than on the corpus, the evidence that it works.

Run:  python benchmarks/compare_objectives.py [--steps 300] [--device auto] [--json PATH]
      [--out-table PATH] [--data PREPARED_DIR]
On one GPU with the defaults the whole script should take a few minutes, most of it the corpus
preparation (tokenizer training on the CPU); on 2 CPU cores use --steps 4 as a smoke test only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from kd_cache_vs_online import ARCHIVE, prepare_babylm_mini, train_teachers

from tinyminds.console import set_quiet
from tinyminds.training.config import DistillConfig, TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.distillation import distill

OBJECTIVES: dict[str, dict[str, Any]] = {
    "kd": {"objective": "kd", "alpha": 0.5},
    "contrastive": {
        "objective": "contrastive",
        "ce_weight": 0.39,
        "kd_weight": 0.39,
        "contrastive_weight": 0.22,
    },
    "mate": {"objective": "mate"},
}


def divergence_summary(run_dir: Path) -> dict[str, float | None]:
    """MATE-KD's divergence curve from a run's metrics: kd_adv / kd_orig over the training
    records (first, mean, last) and the generator's divergence at its first and last step."""
    records = read_metrics(run_dir)
    ratios = [
        r["kd_adv"] / r["kd_orig"]
        for r in records
        if r["kind"] == "train" and r.get("kd_orig", 0) > 0
    ]
    generator = [r for r in records if r["kind"] == "generator"]
    return {
        "ratio_first": ratios[0] if ratios else None,
        "ratio_mean": statistics.fmean(ratios) if ratios else None,
        "ratio_last": ratios[-1] if ratios else None,
        "generator_kd_adv_first": generator[0]["kd_adv"] if generator else None,
        "generator_kd_adv_last": generator[-1]["kd_adv"] if generator else None,
        "generator_changed_mean": (
            statistics.fmean(r["changed"] for r in generator) if generator else None
        ),
        "generator_steps": len(generator),
    }


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every student")
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=0,
        help="steps of each teacher and of the generator (default: --steps)",
    )
    parser.add_argument("--batch", type=int, default=32, help="chunks per step")
    parser.add_argument(
        "--teachers", default="gpt2-tiny,llama-tiny", help="zoo names of the teachers"
    )
    parser.add_argument("--student", default="llama-tiny", help="zoo name of the student")
    parser.add_argument("--generator", default="electra-tiny", help="zoo name of the generator")
    parser.add_argument(
        "--generator-steps",
        type=int,
        default=2,
        help="MATE-KD generator steps per round (paper: 10)",
    )
    parser.add_argument(
        "--student-steps", type=int, default=20, help="MATE-KD student steps per round (paper: 100)"
    )
    parser.add_argument(
        "--generator-lr",
        type=float,
        default=1e-4,
        help="MATE-KD generator lr (paper: 5e-7; higher for short runs, as mate-tiny)",
    )
    parser.add_argument("--eval-chunks", type=int, default=2048, help="validation chunks")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument(
        "--data", type=Path, help="a prepared babylm-mini folder (else prepared here)"
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=ARCHIVE,
        help="babylm-mini.tar.gz (default: ../shared/data beside the project)",
    )
    parser.add_argument(
        "--teacher-dirs", help="comma-separated trained teacher folders (skip training)"
    )
    parser.add_argument("--generator-dir", help="a trained generator folder (skip its training)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--out-table", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    set_quiet(True)
    timings: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started
        print(f"[{timings[name]:7.1f} s] {name}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        data = prepare_babylm_mini(work, args.data, args.archive)
        stage("prepare babylm-mini" if args.data is None else "prepared data (given)", started)
        common = {
            "data": str(data),
            "batch_size": args.batch,
            "epochs": 1,
            "seed": args.seed,
            "eval_chunks": args.eval_chunks,
            "checkpoint_every": 0,
            "log_every": 10,
            "device": args.device,
        }
        pretrain = {**common, "max_steps": args.teacher_steps or args.steps}

        started = time.perf_counter()
        if args.teacher_dirs:
            teacher_dirs = args.teacher_dirs.split(",")
        else:
            teacher_dirs = train_teachers(args.teachers.split(","), pretrain, work)
        stage("teachers", started)

        started = time.perf_counter()
        generator_dir = args.generator_dir
        if not generator_dir:
            result = train(
                TrainConfig(
                    model=args.generator,
                    out=str(work / "generator"),
                    lr=2e-3,
                    warmup_steps=50,
                    **pretrain,
                )
            )
            generator_dir = str(result.model_dir)
            print(f"generator {args.generator}: masked-token CE {result.best_val_ce:.4f}")
        stage("generator (masked LM)", started)

        student = {
            **common,
            "model": args.student,
            "max_steps": args.steps,
            "teachers": teacher_dirs,
            "teacher_cache": False,
            "lr": 2e-3,
            "warmup_steps": 50,
            "weight_decay": 0.1,
            "temperature": 2.0,
            "kl_reduction": "sequence",
            "grad_clip": 5.0,
            "generator": generator_dir,
            "generator_steps": args.generator_steps,
            "student_steps": args.student_steps,
            "generator_lr": args.generator_lr,
        }
        for name, extra in OBJECTIVES.items():
            started = time.perf_counter()
            out = work / f"student-{name}"
            result = distill(DistillConfig(out=str(out), **{**student, **extra}))
            stage(f"student {name}", started)
            row: dict[str, Any] = {
                "objective": name,
                "val_ce": result.best_val_ce,
                "seconds": timings[f"student {name}"],
                "student_tokens_per_s": result.tokens_per_second,
                "validation": result.validation[-1],
            }
            if name == "mate":
                row.update(divergence_summary(out))
            rows.append(row)

    machine = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "machine": machine,
                    "timings_s": timings,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )

    def fmt(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"babylm-mini, {args.steps} student steps x {args.batch} chunks, seed {args.seed}, "
        f"student {args.student}, teachers {args.teachers}, generator {args.generator}; "
        f"{machine['device']}, torch {machine['torch']}, transformers {machine['transformers']}",
        "",
        "| objective | validation CE | vs kd | s | student tok/s | kd_adv/kd_orig first / mean / last | generator kd_adv first / last |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    baseline = rows[0]["val_ce"]
    for row in rows:
        ratio = generator = "-"
        if row["objective"] == "mate":
            ratio = " / ".join(fmt(row[k]) for k in ("ratio_first", "ratio_mean", "ratio_last"))
            generator = " / ".join(
                fmt(row[k], 1) for k in ("generator_kd_adv_first", "generator_kd_adv_last")
            )
        lines.append(
            f"| {row['objective']} | {row['val_ce']:.4f} | {(row['val_ce'] / baseline - 1) * 100:+.2f}% "
            f"| {row['seconds']:.0f} | {row['student_tokens_per_s']:,.0f} | {ratio} | {generator} |"
        )
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.out_table:
        args.out_table.write_text(table)


if __name__ == "__main__":
    main()
