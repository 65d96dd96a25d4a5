"""Cached vs online knowledge distillation on babylm-mini: does the teacher cache change the result?

Prepares babylm-mini (16,000-token BPE), trains two small teachers (a GPT-2 and a Llama) for the
same number of steps, then distills them into a student with the same seed in each of the ways
`--ways` names: the teachers run online, the top-k teacher cache with its tail as one bucket or
spread uniformly, the sampled teacher cache, the hybrid cache (top-k/2 head + k/2 tail draws).
Prints the students' validation CE side by side (the issue's criterion: cached within 1% of
online), the cache build time, its size per million tokens, and student tokens/s.

Run:  python benchmarks/kd_cache_vs_online.py [--steps 300] [--model gpt2-tiny] [--k 32]
      [--data PREPARED_DIR] [--ways online,topk,sample,hybrid,hybrid:64,sample:128] [--json PATH]
      [--out-table PATH]
(about 35 minutes on 2 idle CPU cores with the defaults: online KD at a 16,000-token vocabulary
runs at ~1,700 student tokens/s there; the caches hold only the chunks the 300 steps read.)
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyminds.console import set_quiet
from tinyminds.data.prepare import prepare
from tinyminds.training.config import DistillConfig, TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.objectives.distillation import distill

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "babylm-mini.tar.gz"


def prepare_babylm_mini(work: Path, data: Path | None = None, archive: Path = ARCHIVE) -> Path:
    """``data`` if given (an already prepared folder), else babylm-mini (``archive``) extracted
    into ``work`` and prepared there (16,000-token BPE). Also used by compare_objectives.py."""
    if data is not None:
        return data
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    prepare(work / "babylm-mini", work / "data")
    return work / "data"


def train_teachers(
    names: list[str], common: dict[str, Any], work: Path, notes: list[str] | None = None
) -> list[str]:
    """Train each zoo model in ``names`` with the settings ``common`` (lr 2e-3, 50 warm-up steps),
    printing its validation CE and time; returns the model folders. Also used by
    compare_objectives.py."""
    folders = []
    for name in names:
        started = time.perf_counter()
        result = train(
            TrainConfig(model=name, out=str(work / name), lr=2e-3, warmup_steps=50, **common)
        )
        folders.append(str(result.model_dir))
        if notes is not None:
            notes.append(f"{name} val CE {result.best_val_ce:.4f}")
        print(
            f"teacher {name}: validation CE {result.best_val_ce:.4f} ({time.perf_counter() - started:.0f} s)"
        )
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every run")
    parser.add_argument("--batch", type=int, default=32, help="chunks per step")
    parser.add_argument(
        "--teachers", default="gpt2-tiny,llama-tiny", help="zoo names of the teachers"
    )
    parser.add_argument("--model", default="gpt2-tiny", help="zoo name of the student")
    parser.add_argument("--k", type=int, default=32, help="tokens per position in the cache")
    parser.add_argument(
        "--data", type=Path, help="a prepared babylm-mini folder (else prepared here)"
    )
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="babylm-mini archive")
    parser.add_argument(
        "--ways",
        default="online,topk,sample,hybrid,hybrid:64,sample:128",
        help="comma-separated: online, topk (bucket tail), topk-uniform, sample, hybrid; "
        "NAME:K for another k than --k",
    )
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--out-table", type=Path, help="write the Markdown table here")
    args = parser.parse_args()
    set_quiet(True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data is None and not args.archive.is_file():
            raise SystemExit(f"{args.archive}: babylm-mini archive not found (--archive)")
        data = prepare_babylm_mini(work, args.data, args.archive)
        common = {"data": str(data), "batch_size": args.batch, "epochs": 1, "max_steps": args.steps,
                  "eval_chunks": 2048, "checkpoint_every": 0, "log_every": 50, "seed": 42}  # fmt: skip

        teacher_notes: list[str] = []
        teacher_dirs = train_teachers(args.teachers.split(","), common, work, teacher_notes)

        student = {**common, "model": args.model, "teachers": teacher_dirs, "lr": 2e-3, "warmup_steps": 50,
                   "weight_decay": 0.1, "alpha": 0.5, "temperature": 2.0, "kl_reduction": "sequence"}  # fmt: skip
        known = {
            "online": {"teacher_cache": False},
            "topk": {"cache_selection": "topk"},
            "topk-uniform": {"cache_selection": "topk", "cache_tail": "uniform"},
            "sample": {"cache_selection": "sample"},
            "hybrid": {"cache_selection": "hybrid"},
        }
        ways = {}
        for spec in args.ways.split(","):
            name, _, k_text = spec.partition(":")  # "hybrid:64": another k than --k
            if name not in known:
                raise SystemExit(f"--ways: unknown {name!r}; known: {', '.join(known)}")
            if name == "online":
                ways["online"] = known[name]
                continue
            k = int(k_text) if k_text else args.k
            ways[f"cache {name} (k={k})"] = {**known[name], "cache_k": k}
        rows = []
        for way, extra in ways.items():
            # topk and topk-uniform read the same cache (the tail is a loss option).
            selection = extra.get("cache_selection", "none")
            cache_dir = work / f"cache-{selection}-{extra.get('cache_k', 0)}"
            started = time.perf_counter()
            result = distill(
                DistillConfig(
                    out=str(work / way.replace(" ", "-")),
                    cache_dir=str(cache_dir),
                    **student,
                    **extra,
                )
            )
            meta_path = cache_dir / "meta.json"
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            # The run computed only the chunks it reads; bytes per token from the stored dtypes.
            cached_chunks = int(np.load(cache_dir / "filled.npy").sum()) if meta else 0
            bytes_per_token = sum(
                np.dtype(meta["dtypes"][name]).itemsize * (meta["k"] if len(shape) == 3 else 1)
                for name, shape in meta.get("shapes", {}).items()
            )
            rows.append({
                "way": way,
                "val_ce": result.best_val_ce,
                "student_tokens_per_s": result.tokens_per_second,
                "wall_s": time.perf_counter() - started,
                "cache_build_s": meta.get("seconds"),
                "cached_tokens": cached_chunks * meta.get("chunk_len", 0),
                "cache_mb_per_million_tokens": bytes_per_token or None,  # 1e6 tokens x B bytes = B MB
            })  # fmt: skip

    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
        )

    online = rows[0]["val_ce"]
    lines = [
        f"babylm-mini, {args.steps} steps x {args.batch} chunks, student {args.model}, "
        f"teachers {args.teachers} ({', '.join(teacher_notes)}), seed 42, {machine()}",
        "",
        "| way | validation CE | vs online | student tok/s | wall s | cache build s | cache MB per M tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for row in rows:
        build = f"{row['cache_build_s']:.0f}" if row["cache_build_s"] else "-"
        size = (
            f"{row['cache_mb_per_million_tokens']:.0f}"
            if row["cache_mb_per_million_tokens"]
            else "-"
        )
        lines.append(f"| {row['way']} | {row['val_ce']:.4f} | {(row['val_ce'] / online - 1) * 100:+.2f}% | "
                     f"{row['student_tokens_per_s']:,.0f} | {row['wall_s']:.0f} | {build} | {size} |")  # fmt: skip
    table = "\n".join(lines)
    print("\n" + table)
    if args.out_table:
        args.out_table.write_text(table + "\n")


def machine() -> str:
    """The device the runs used, in words."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


if __name__ == "__main__":
    main()
