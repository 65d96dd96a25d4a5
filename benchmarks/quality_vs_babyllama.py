"""The DistilledGPT-44M chain two ways on 2 CPU cores: tinyminds against the BabyLlama way.

What is compared
----------------
The chain of `tinyminds reproduce --scale mini` for DistilledGPT-44M (prepare, the GPT2-44M and
Llama-60M teachers, the student distilled from both) on babylm-mini, done twice per seed:

* **tinyminds**: `tinyminds reproduce --scale mini --seeds S --only ...` into ``--run-dir``: the
  engine trains the teachers, the student reads the teacher cache (built once, only for the
  chunks it reads), every model is validated every ``eval_every`` steps. Stages that are already
  finished in ``--run-dir`` (same config, same inputs) are reused: their times are the ones
  recorded when they ran, on this machine (``stage.json``).
* **the BabyLlama way**: the same models done as BabyLlama does them: `transformers.Trainer` for
  each teacher, then a `Trainer` subclass whose ``compute_loss`` runs both teachers online and adds
  BabyLlama's loss (``alpha * CE + (1 - alpha) * T^2 * KLDivLoss(batchmean)`` on the full
  ``[B, 128, V]`` logits; `bench_distill.BabyLlamaDistillTrainer`). The Trainer evaluates on the
  same dev chunks every ``eval_every`` steps as tinyminds validates (BabyLlama evaluates too), and
  saves the final model.

Same everything that is not the way itself: the prepared data of the tinyminds run (tokenizer,
training chunks), the mini recipes' models, batch, lr, warm-up, weight decay, clipping, max_steps,
alpha and T, the seeds, fp32, the same machine, one after the other in one process. The Trainer
draws its own chunk order from the seed (that is BabyLlama's way; tinyminds permutes per epoch).

Both sides are scored by tinyminds' own code: dev CE on the run's fixed validation subset
(`tinyminds.evaluation.dev_ce`, which measures exactly as the engine validates) and BLiMP filtered,
the supplement and EWoK through `tinyminds.evaluation.zero_shot.evaluate` (every pair).

The table gives per model and seed: dev CE, the three suites, wall time, tokens/s (training loop),
and the ratios; then the student's stage (tinyminds: cache build + training + validation) against
the BabyLlama way's student stage, the whole chain, and the ratio projected to the paper's six
student epochs (the cache is built once, then read every epoch).

Targets (issue 12): dev CE within 1% of the BabyLlama way's (or lower), BLiMP within the
seed-to-seed spread (or higher); the distillation stage, cache included, faster than the
BabyLlama way's student stage; the whole chain no slower.

Run it:  python benchmarks/quality_vs_babyllama.py --corpus babylm-mini/ --eval-data EVAL_DIR
         --run-dir runs/mini [--seeds 42,7] [--out-table PATH] [--json PATH]
(about 50 minutes per seed per side on 2 CPU cores; a finished tinyminds side is reused.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_distill import BabyLlamaDistillTrainer
from bench_train_cpu import ChunkDataset, machine_info, trainer_arguments
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    PrinterCallback,
    Trainer,
    TrainerCallback,
)
from transformers.utils import logging as hf_logging

from tinyminds.console import set_quiet
from tinyminds.data.chunks import PreparedData, load_prepared, validation_subset
from tinyminds.data.tokenizer import load_tokenizer, save_hf_tokenizer
from tinyminds.evaluation.dev_ce import dev_cross_entropy
from tinyminds.evaluation.zero_shot import evaluate
from tinyminds.files import to_json, write_text_atomic
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.reproduce import make_settings, reproduce
from tinyminds.reproduce.stages import (
    GRID_BY_STAGE,
    LATER_KEYS,
    SCALES,
    members,
    resolved_config,
)

CHAIN = ("gpt2-44m", "llama-60m", "distilledgpt-44m")
"""The DistilledGPT-44M chain: the two teachers, then the student."""
TASKS = ["blimp", "supplement", "ewok"]


# --- tinyminds ------------------------------------------------------------------------------------


def tinyminds_side(args: argparse.Namespace, seeds: list[int]) -> dict[str, Any]:
    """Run (or reuse) the chain with tinyminds; per seed and model: dev CE, scores, times."""
    if args.device == "auto" and torch.cuda.is_available():
        raise SystemExit(
            "--device auto would train tinyminds' side on the GPU; this is a CPU benchmark"
        )
    settings = make_settings(
        args.scale,
        args.run_dir,
        args.corpus,
        args.eval_data,
        TASKS,
        seeds=seeds,
        device=args.device,
    )
    only = ["prepare", *(f"eval-{name}*" for name in CHAIN)]
    result = reproduce(settings, args.run_dir, only=only, command="quality_vs_babyllama.py")
    graph = result.graph
    side: dict[str, Any] = {"prepare_seconds": graph.record("prepare")["seconds"], "runs": {}}
    for member in members(settings):
        if member.entry.stage not in CHAIN:
            continue
        document = graph.record(member.stage)
        if document is None:
            raise SystemExit(f"tinyminds stage {member.stage} did not finish; see {result.report}")
        record = document["record"]
        scores = json.loads(
            (graph.folder(f"eval-{member.stage}") / f"{member.stage}.json").read_text()
        )
        side["runs"][(member.seed, member.entry.stage)] = {
            "dev_ce": record["best_val_ce"],
            "scores": {t: 100 * v["accuracy"] for t, v in scores["tasks"].items()},
            "seconds": document["seconds"],
            "setup_seconds": record.get("setup_seconds", 0.0),
            "tokens_per_second": record["tokens_per_second"],
            "steps": record["steps"],
            "parameters": record["parameters"],
        }
    side["data_dir"] = graph.folder("prepare") / "data"
    side["settings"] = settings
    return side


# --- the BabyLlama way ------------------------------------------------------------------------------


class StepClock(TrainerCallback):
    """Training-loop time: the sum of the optimizer steps' wall times (evaluations excluded)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds += time.perf_counter() - self._started


def babyllama_run(
    stage: str, config: Any, data: PreparedData, work: Path, teachers: list[Path]
) -> dict[str, Any]:
    """Train one model of the chain the BabyLlama way; save it to ``work/stage``; time it."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(get_spec(config.model), data.vocab_size)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    dev = data.chunks("dev")[
        validation_subset(len(data.chunks("dev")), config.eval_chunks, config.eval_seed)
    ]
    clock = StepClock()
    common = {
        "model": model,
        "args": trainer_arguments(
            config,
            work / f"{stage}-trainer",
            batch_size=config.batch_size,
            grad_accum=config.grad_accum,
            max_steps=config.max_steps,
            eval_steps=config.eval_every,
        ),
        "train_dataset": ChunkDataset(data.chunks("train")),
        "eval_dataset": ChunkDataset(dev),
        "data_collator": DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        "callbacks": [clock],
    }
    if teachers:
        trainer: Trainer = BabyLlamaDistillTrainer(
            **common,
            teachers=[AutoModelForCausalLM.from_pretrained(str(t)) for t in teachers],
            alpha=config.alpha,
            temperature=config.temperature,
        )
    else:
        trainer = Trainer(**common)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    folder = work / stage
    trainer.save_model(str(folder))
    save_hf_tokenizer(tokenizer, folder)
    seconds = time.perf_counter() - started
    tokens = config.max_steps * config.batch_size * config.grad_accum * data.chunk_size
    return {
        "seconds": seconds,
        "tokens_per_second": tokens / clock.seconds,
        "model_dir": folder,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": config.max_steps,
    }


def _same_config(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a finished model's saved config is ``current``; a key added to tinyminds since
    (`LATER_KEYS`) counts as the same while ``current`` has it at its default."""
    later = {k: v for k, v in LATER_KEYS.items() if k not in saved and current.get(k) == v}
    return {**saved, **later} == current


def babyllama_side(side: dict[str, Any], seed: int, work: Path) -> dict[tuple[int, str], Any]:
    """The chain of one seed the BabyLlama way, each model scored by tinyminds' code."""
    data = load_prepared(side["data_dir"])
    settings = side["settings"]
    by_stage = {m.entry.stage: m for m in members(settings) if m.seed == seed}
    runs: dict[tuple[int, str], Any] = {}
    folders: dict[str, Path] = {}
    for stage in CHAIN:
        member = by_stage[stage]
        config = resolved_config(member, settings, [f"data={side['data_dir']}"])
        # A finished model of an interrupted benchmark is reused when its config is the same.
        record_path = work / f"seed{seed}" / f"{stage}.result.json"
        fingerprint = json.loads(json.dumps(dataclasses.asdict(config), default=str))
        if record_path.is_file():
            saved = json.loads(record_path.read_text(encoding="utf-8"))
            if (
                _same_config(saved["config"], fingerprint)
                and Path(saved["run"]["model_dir"]).is_dir()
            ):
                print(f"[babyllama way] seed {seed}: {stage} reused ({record_path})", flush=True)
                saved["run"]["model_dir"] = Path(saved["run"]["model_dir"])
                folders[stage] = saved["run"]["model_dir"]
                runs[(seed, stage)] = saved["run"]
                continue
        teachers = [folders[t] for t in GRID_BY_STAGE[stage].teachers]
        print(f"[babyllama way] seed {seed}: {stage} ({config.max_steps} steps)", flush=True)
        run = babyllama_run(stage, config, data, work / f"seed{seed}", teachers)
        folders[stage] = run["model_dir"]
        model = AutoModelForCausalLM.from_pretrained(str(run["model_dir"]))
        run["dev_ce"] = dev_cross_entropy(model, data, config.eval_chunks, config.eval_seed)
        evaluation = evaluate(
            run["model_dir"],
            TASKS,
            [side["settings"].eval_folder],
            work / f"seed{seed}" / f"eval-{stage}",
            name=stage,
            device="cpu",
        )
        document = json.loads(evaluation.json_path.read_text(encoding="utf-8"))
        run["scores"] = {t: 100 * v["accuracy"] for t, v in document["tasks"].items()}
        runs[(seed, stage)] = run
        saved = {"config": fingerprint, "run": run}
        write_text_atomic(record_path, to_json(saved) + "\n")
    return runs


# --- the table ----------------------------------------------------------------------------------


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(
    tm: dict[str, Any], bl: dict[tuple[int, str], Any], seeds: list[int], data: PreparedData
) -> tuple[str, dict[str, Any]]:
    """The side-by-side Markdown tables and the targets, and the same as JSON."""
    lines = [
        "Per model and seed: tinyminds (tm) and the BabyLlama way (bl); ratios are tm / bl "
        "(dev CE: lower is better; time: below 1 is faster).",
        "",
        _row(
            [
                "model",
                "seed",
                "dev CE tm",
                "dev CE bl",
                "ratio",
                "BLiMP tm",
                "BLiMP bl",
                "supplement tm",
                "supplement bl",
                "EWoK tm",
                "EWoK bl",
                "wall s tm",
                "wall s bl",
                "ratio",
                "tokens/s tm",
                "tokens/s bl",
                "ratio",
            ]
        ),
        _row(["---", "---"] + ["---:"] * 15),
    ]
    rows = []
    for seed in seeds:
        for stage in CHAIN:
            a, b = tm["runs"][(seed, stage)], bl[(seed, stage)]
            row = {
                "model": GRID_BY_STAGE[stage].paper_name,
                "seed": seed,
                "dev_ce": (a["dev_ce"], b["dev_ce"]),
                "scores": {t: (a["scores"][t], b["scores"][t]) for t in TASKS},
                "seconds": (a["seconds"], b["seconds"]),
                "tokens_per_second": (a["tokens_per_second"], b["tokens_per_second"]),
                "setup_seconds": a["setup_seconds"],
                "steps": a["steps"],
            }
            rows.append(row)
            lines.append(
                _row(
                    [
                        row["model"],
                        seed,
                        f"{a['dev_ce']:.4f}",
                        f"{b['dev_ce']:.4f}",
                        f"{a['dev_ce'] / b['dev_ce']:.4f}",
                        *(f"{v:.1f}" for t in TASKS for v in row["scores"][t]),
                        f"{a['seconds']:.0f}",
                        f"{b['seconds']:.0f}",
                        f"{a['seconds'] / b['seconds']:.2f}x",
                        f"{a['tokens_per_second']:,.0f}",
                        f"{b['tokens_per_second']:,.0f}",
                        f"{a['tokens_per_second'] / b['tokens_per_second']:.2f}x",
                    ]
                )
            )
    # Seed-to-seed spread of tinyminds' BLiMP per model, the yardstick of "within noise".
    spread = {}
    for stage in CHAIN:
        values = [tm["runs"][(s, stage)]["scores"]["blimp"] for s in seeds]
        spread[stage] = max(values) - min(values) if len(values) > 1 else None
    targets = []
    for row in rows:
        stage = next(s for s in CHAIN if GRID_BY_STAGE[s].paper_name == row["model"])
        (ce_tm, ce_bl), (blimp_tm, blimp_bl) = row["dev_ce"], row["scores"]["blimp"]
        room = spread[stage]
        targets.append(
            {
                "model": row["model"],
                "seed": row["seed"],
                "dev_ce_within_1pct": ce_tm <= 1.01 * ce_bl,
                "blimp_gap": blimp_tm - blimp_bl,
                "blimp_within_spread": None if room is None else blimp_tm >= blimp_bl - room,
            }
        )
    # Stage and chain times; the projection to the paper's six student epochs.
    epoch_tokens = len(data.chunks("train")) * data.chunk_size
    lines += [
        "",
        _row(["seed", "what", "tinyminds (s)", "BabyLlama way (s)", "ratio"]),
        _row(["---", "---", "---:", "---:", "---:"]),
    ]
    timing = []
    for seed in seeds:
        student_tm = tm["runs"][(seed, "distilledgpt-44m")]
        student_bl = bl[(seed, "distilledgpt-44m")]
        chain_tm = tm["prepare_seconds"] + sum(tm["runs"][(seed, s)]["seconds"] for s in CHAIN)
        chain_bl = tm["prepare_seconds"] + sum(bl[(seed, s)]["seconds"] for s in CHAIN)
        # Six epochs: tinyminds builds the cache once (the recorded set-up covers the chunks the
        # run read; scaled to one epoch), then trains six epochs at its measured tokens/s.
        read_tokens = student_tm["steps"] * _tokens_per_step(tm, seed)
        cache_epoch = student_tm["setup_seconds"] * min(epoch_tokens / max(read_tokens, 1), 1.0)
        six_tm = cache_epoch + 6 * epoch_tokens / student_tm["tokens_per_second"]
        six_bl = 6 * epoch_tokens / student_bl["tokens_per_second"]
        for what, a, b in (
            (
                "student stage (tm: teacher cache included)",
                student_tm["seconds"],
                student_bl["seconds"],
            ),
            ("whole chain (prepare, 2 teachers, student)", chain_tm, chain_bl),
            ("student, projected to 6 epochs (training loop)", six_tm, six_bl),
        ):
            lines.append(_row([seed, what, f"{a:,.0f}", f"{b:,.0f}", f"{a / b:.2f}x"]))
            timing.append({"seed": seed, "what": what, "tinyminds": a, "babyllama": b})
    lines += ["", "Targets:"]
    for t in targets:
        within = {None: "one seed: no spread", True: "yes", False: "no"}[t["blimp_within_spread"]]
        lines.append(
            f"- {t['model']} seed {t['seed']}: dev CE within 1% of the BabyLlama way's or lower: "
            f"{'yes' if t['dev_ce_within_1pct'] else 'no'}; BLiMP {t['blimp_gap']:+.1f} points, "
            f"within the seed spread or better: {within}"
        )
    for item in timing:
        faster = item["tinyminds"] <= item["babyllama"]
        lines.append(
            f"- seed {item['seed']}, {item['what']}: tinyminds {'no slower' if faster else 'slower'}"
        )
    return "\n".join(lines) + "\n", {
        "rows": rows,
        "targets": targets,
        "timing": timing,
        "blimp_spread": spread,
    }


def _tokens_per_step(tm: dict[str, Any], seed: int) -> int:
    settings = tm["settings"]
    member = next(m for m in members(settings) if m.seed == seed and m.entry.stage == CHAIN[-1])
    config = resolved_config(member, settings, [f"data={tm['data_dir']}"])
    return config.batch_size * config.grad_accum * 128


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="babylm-mini/ (BabyLM layout)")
    parser.add_argument("--eval-data", type=Path, required=True, help="evaluation_data/ folder")
    parser.add_argument("--run-dir", type=Path, required=True, help="the tinyminds reproduce run")
    parser.add_argument("--work", type=Path, default=None, help="the BabyLlama way's folder")
    parser.add_argument("--seeds", default="42,7", help="comma-separated (default 42,7)")
    parser.add_argument(
        "--scale",
        default="mini",
        choices=[name for name in SCALES if name != "paper"],
        help="the reproduce scale (default mini; tiny: a few minutes, to try the benchmark out)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "auto"],
        default="cpu",
        help="tinyminds' device setting (part of its stages' keys): auto reuses a run made by "
        "`tinyminds reproduce` without --device (on a machine without a GPU, the CPU too)",
    )
    parser.add_argument("--out-table", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    set_quiet(True)
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    work = args.work or args.run_dir / "babyllama-way"
    started = time.perf_counter()
    tm = tinyminds_side(args, seeds)
    bl: dict[tuple[int, str], Any] = {}
    for seed in seeds:
        bl.update(babyllama_side(tm, seed, work))
    data = load_prepared(tm["data_dir"])
    text, document = report(tm, bl, seeds, data)
    header = (
        f"# DistilledGPT-44M chain: tinyminds vs the BabyLlama way (scale {args.scale})\n\n"
        f"Machine: {json.dumps(machine_info())}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"benchmark wall time {time.perf_counter() - started:,.0f} s. Hyperparameters are the "
        f"{args.scale} recipes', chosen on dev cross-entropy only; BLiMP, the supplement and EWoK are test sets.\n\n"
    )
    print(header + text)
    if args.out_table:
        args.out_table.write_text(header + text, encoding="utf-8")
    if args.json:
        document["machine"] = machine_info()
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    spreads = [v for v in document["blimp_spread"].values() if v is not None]
    if spreads:
        print(
            f"tinyminds' BLiMP seed spread: mean {statistics.mean(spreads):.1f} points",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
