"""Time the BabyLM 2025 fast zero-shot suite (`tinyminds evaluate --suite babylm-2025-fast`).

The suite the 2025 pipeline runs on every intermediate checkpoint: blimp_fast, supplement_fast,
ewok_fast, entity_tracking_fast, wug_adj and reading, scored with the 2025 convention. The model is
the paper's GPT2-44M (2 layers, 768 wide, a 16,000-token BPE trained on babylm-mini) with random
weights (seed 0), as in `bench_evaluate.py` (the time does not depend on the weights), or
``--model DIR``. The data are the six archives of ``../shared/data`` extracted into a temporary
folder (or ``--data DIR``); nothing is written into the work tree and no item is printed.

Prints the time of every task (from the files to the score), the load time and the total against
the issue's target (at most 90 s on 2 CPU cores for GPT2-44M).

Run it:  python benchmarks/bench_evaluate_2025.py [--model DIR | --model-size gpt2-44m]
         [--data DIR] [--batch 64] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_evaluate import SHARED_DATA, build_model_folder, extract, machine_info

ARCHIVES = ("blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking", "wug", "reading")
TARGET_SECONDS = 90.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a causal LM folder (default: a zoo model)")
    parser.add_argument("--model-size", default="gpt2-44m", help="zoo model (default gpt2-44m)")
    parser.add_argument("--data", type=Path, help="folder holding the six task folders")
    parser.add_argument("--corpus", type=Path, help="corpus for the tokenizer (default mini)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from tinyminds.console import set_quiet
    from tinyminds.evaluation.tasks import SUITES
    from tinyminds.evaluation.zero_shot import evaluate

    set_quiet(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks, convention = SUITES["babylm-2025-fast"]
    with tempfile.TemporaryDirectory(prefix="tinyminds-bench2025-") as temporary:
        work = Path(temporary)
        model = args.model or build_model_folder(args.model_size, None, args.corpus, work)
        data = args.data
        if data is None:
            data = work / "data"
            for name in ARCHIVES:
                extract(SHARED_DATA / f"{name}.tar.gz", data)
        started = time.perf_counter()
        result = evaluate(
            model,
            tasks,
            [data],
            work / "results",
            device="cpu",
            convention=convention,
            batch_size=args.batch,
        )
        total = time.perf_counter() - started
    document = result.summary
    scored = sum(entry["seconds"] for entry in document["tasks"].values())
    print(
        f"# BabyLM 2025 fast suite, {document['model']['name']} "
        f"({document['model']['parameters']:,} parameters), batch {args.batch}"
    )
    print(f"Machine: {json.dumps(machine_info())}\n")
    print("| task | items | seconds | score (x 100) |")
    print("| --- | ---: | ---: | ---: |")
    for task, entry in document["tasks"].items():
        score = entry.get("accuracy", entry.get("score"))
        print(f"| {task} | {entry['n']:,} | {entry['seconds']:.1f} | {100 * score:.2f} |")
    print(f"| loading the data, the tokenizer and the model | | {total - scored:.1f} | |")
    print(f"| **total** | | **{total:.1f}** | |")
    verdict = "within" if total <= TARGET_SECONDS else "over"
    print(f"\nTarget: at most {TARGET_SECONDS:.0f} s on 2 CPU cores: {verdict} ({total:.1f} s).")
    if args.json:
        figures = {
            "machine": machine_info(),
            "model": document["model"],
            "tasks": {
                t: {"n": e["n"], "seconds": e["seconds"]} for t, e in document["tasks"].items()
            },
            "total_seconds": total,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
