"""Every divergence and the three objectives on equal terms: same teachers, cache, seed, budget.

Distills the same teachers into the same student once per row, each with the same seed, batch,
step budget, learning-rate schedule, temperature, KL reduction and teacher cache (a top-k cache of
``--cache-k`` tokens, the one kind that serves every divergence), and prints one table:

- ``kd`` with each divergence: ``forward_kl`` (the paper's), ``reverse_kl``, ``skew_kl`` and
  ``skew_reverse_kl`` (DistiLLM, alpha 0.1), ``jsd`` (GKD, beta 0.5), ``taid`` (TAID, t from 0.4);
- ``kd`` with ``forward_kl`` from the sampled cache (tinyminds' default), to show the cache's part;
- ``contrastive`` (0.39 / 0.39 / 0.22, hidden-state representations from the cache) and ``mate``
  (2 generator steps per 20 student steps, the KD term on the original text from the cache), both
  with ``forward_kl``.

Columns: the student's dev cross-entropy (the best validation, the only number any choice here
may rest on), its forward KL to the teachers' ensemble on dev at temperature T (the same measure
for every row, whatever divergence it trained), training tokens/s (the engine's: optimizer steps
only) and the whole run's seconds (cache build or extension and validation included), and which
cache it read. For MATE-KD also the ``kd_adv / kd_orig`` ratio (first / mean / last training
record) and the generator's divergence at its first and last step. No test set (BLiMP, the
supplement, EWoK, GLUE) is read.

Run:  python benchmarks/compare_objectives.py --data PREPARED --teachers T1,T2 --generator GEN
      [--steps 300] [--student llama-small] [--cache-k 128] [--rows forward_kl,jsd,...]
      [--json PATH] [--out-table PATH]
Without --data / --teachers / --generator it prepares babylm-mini and trains tiny teachers and an
electra-tiny generator first (--teacher-steps, --tiny-teachers). The committed comparison used
the mini scale's seed-42 teachers (docs/results/objectives-2026-12-06/README.md has the command);
run it alone, since the tokens/s are CPU-bound.
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

ROWS: dict[str, dict[str, Any]] = {
    "forward_kl": {"divergence": "forward_kl"},
    "reverse_kl": {"divergence": "reverse_kl"},
    "skew_kl": {"divergence": "skew_kl", "skew_alpha": 0.1},
    "skew_reverse_kl": {"divergence": "skew_reverse_kl", "skew_alpha": 0.1},
    "jsd": {"divergence": "jsd", "jsd_beta": 0.5},
    "taid": {"divergence": "taid"},
    "forward_kl-sampled": {"divergence": "forward_kl", "cache_selection": "sample"},
    "contrastive": {
        "objective": "contrastive",
        "ce_weight": 0.39,
        "kd_weight": 0.39,
        "contrastive_weight": 0.22,
    },
    "mate": {"objective": "mate", "generator_steps": 2, "student_steps": 20, "generator_lr": 1e-4},
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
    }


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def run_row(name: str, common: dict[str, Any], work: Path) -> dict[str, Any]:
    """Distill one row's student and read its numbers."""
    settings = {**common, **ROWS[name]}
    # One cache per kind, shared by every row that reads it (the contrastive one also holds the
    # teachers' representations, hence another key and folder).
    with_representations = settings.get("objective") == "contrastive"
    settings["cache_dir"] = str(
        work / f"cache-{settings['cache_selection']}{'-representations' * with_representations}"
    )
    out = work / f"student-{name}"
    started = time.perf_counter()
    result = distill(DistillConfig(**{**settings, "out": str(out)}))
    seconds = time.perf_counter() - started
    validation = [r for r in read_metrics(out) if r["kind"] == "val"]
    best = min(validation, key=lambda r: r["ce"])
    row: dict[str, Any] = {
        "row": name,
        "objective": settings.get("objective", "kd"),
        "divergence": settings.get("divergence", "forward_kl"),
        "cache": f"{settings['cache_selection']} k={settings['cache_k']}"
        + (" + representations" if settings.get("objective") == "contrastive" else ""),
        "dev_ce": result.best_val_ce,
        "dev_kl": best["kl"],
        "tokens_per_s": result.tokens_per_second,
        "seconds": seconds,
    }
    if row["objective"] == "mate":
        row.update(divergence_summary(out))
    return row


def machine_record(device: str) -> dict[str, str]:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def write_json(path: Path, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": machine_record(args.device),
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def table(rows: list[dict[str, Any]], header: str) -> str:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    reference = next((r["dev_ce"] for r in rows if r["row"] == "forward_kl"), rows[0]["dev_ce"])
    lines = [
        header,
        "",
        "| row | objective | divergence | cache | dev CE | vs forward_kl | dev KL (forward, T) "
        "| tokens/s | run s | MATE kd_adv/kd_orig first / mean / last |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        mate = "-"
        if row["objective"] == "mate":
            mate = " / ".join(fmt(row[k]) for k in ("ratio_first", "ratio_mean", "ratio_last"))
        lines.append(
            f"| {row['row']} | {row['objective']} | {row['divergence']} | {row['cache']} "
            f"| {row['dev_ce']:.4f} | {(row['dev_ce'] / reference - 1) * 100:+.2f}% "
            f"| {row['dev_kl']:.4f} | {row['tokens_per_s']:,.0f} | {row['seconds']:.0f} | {mate} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every student")
    parser.add_argument("--batch", type=int, default=32, help="chunks per step")
    parser.add_argument("--student", default="llama-small", help="zoo name of the student")
    parser.add_argument("--cache-k", type=int, default=128, help="tokens per position cached")
    parser.add_argument("--eval-chunks", type=int, default=1024, help="validation chunks")
    parser.add_argument("--eval-every", type=int, default=0, help="validate every N steps")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument("--data", type=Path, help="a prepared folder (else babylm-mini prepared)")
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="babylm-mini.tar.gz")
    parser.add_argument("--teachers", help="comma-separated trained teacher folders")
    parser.add_argument("--generator", help="a trained masked-LM generator folder")
    parser.add_argument(
        "--tiny-teachers",
        default="gpt2-tiny,llama-tiny",
        help="teachers to train without --teachers",
    )
    parser.add_argument("--teacher-steps", type=int, default=300, help="their steps")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--out-table", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    set_quiet(True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compare-objectives-") as tmp:
        work = Path(tmp)
        data = prepare_babylm_mini(work, args.data, args.archive)
        common: dict[str, Any] = {
            "data": str(data),
            "batch_size": args.batch,
            "epochs": 1,
            "seed": args.seed,
            "eval_chunks": args.eval_chunks,
            "eval_every": args.eval_every,
            "checkpoint_every": 0,
            "log_every": 10,
            "device": args.device,
        }
        pretrain = {**common, "max_steps": args.teacher_steps}
        teachers = (
            args.teachers.split(",")
            if args.teachers
            else train_teachers(args.tiny_teachers.split(","), pretrain, work)
        )
        generator = args.generator
        if not generator and "mate" in names:
            config = TrainConfig(
                model="electra-tiny", out=str(work / "generator"), lr=2e-3, warmup_steps=30,
                **pretrain,
            )  # fmt: skip
            generator = str(train(config).model_dir)
        student = {
            **common,
            "model": args.student,
            "teachers": teachers,
            "generator": generator or "",
            "max_steps": args.steps,
            "lr": 2e-3,
            "warmup_steps": max(1, args.steps // 10),
            "weight_decay": 0.1,
            "grad_clip": 5.0,
            "alpha": 0.5,
            "temperature": 2.0,
            "kl_reduction": "token",
            "teacher_cache": True,
            "cache_selection": "topk",
            "cache_k": args.cache_k,
        }
        for name in names:
            row = run_row(name, student, work)
            rows.append(row)
            if args.json:  # after every row: a later failure keeps the rows already measured
                write_json(args.json, args, rows)
            print(
                f"{name}: dev CE {row['dev_ce']:.4f}, dev KL {row['dev_kl']:.4f}, "
                f"{row['tokens_per_s']:,.0f} tokens/s, {row['seconds']:.0f} s",
                flush=True,
            )
    machine = machine_record(args.device)
    header = (
        f"{args.student} student, {args.steps} steps x {args.batch} chunks of the training split, "
        f"seed {args.seed}, alpha 0.5, T 2, per-token KL; {machine['device']}, torch "
        f"{machine['torch']}, transformers {machine['transformers']}"
    )
    text = table(rows, header)
    print("\n" + text)
    if args.out_table:
        args.out_table.write_text(text)
    if args.json:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
