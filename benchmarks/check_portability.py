"""Do tinyminds' model folders load the same under transformers 4.51.3 and lm-eval's HFLM?

The BabyLM 2025 evaluation pipeline pins transformers 4.51.3 and loads a submission with
`AutoTokenizer`/`AutoProcessor`/`AutoModelForCausalLM`; the 2026 pipeline scores through
lm-evaluation-harness's `HFLM`. tinyminds runs on transformers 5. This check:

1. builds a scratch virtual environment (``--venv``, kept for the next run) with torch first and
   pinned (the project's torch version, as the README's set-up installs it), then
   ``transformers==4.51.3`` and ``lm-eval``;
2. trains a tiny GPT-2 and a tiny Llama with tinyminds (30 steps on the embedded Shakespeare
   corpus: a freshly exported folder, as every tinyminds model folder is written), or takes the
   folders given with ``--folder``;
3. in this environment (transformers 5): the tokenizer's keys and ids for a few sentences, the
   logits of ``model(**tokenizer(text))`` (what the 2025 reading task calls), and tinyminds'
   evaluator's log-probabilities of a few minimal pairs (BLiMP's format, written here);
4. in the scratch environment (transformers 4.51.3): the same through `AutoTokenizer`,
   `AutoProcessor` and `AutoModelForCausalLM`, and the pairs' log-likelihoods through `HFLM`
   (empty context, " " + sentence: BLiMP's scoring in the harness, as `bench_evaluate.py` defines it);
5. prints both versions, the tokenizer's keys on both sides, and the largest differences; exits 1
   when a check fails (keys or ids differ, logits beyond 1e-4, log-likelihoods beyond 1e-3).

Run it:  python benchmarks/check_portability.py [--venv .venv-tf4] [--folder MODEL_DIR ...]
         [--skip-lm-eval] [--json PATH]
(first run: the scratch environment's installs, a few minutes; then about a minute on 2 CPU cores.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from tinyminds.console import set_quiet
from tinyminds.data.demo_corpus import write_demo_corpus
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.evaluation.zero_shot import evaluate
from tinyminds.recipes import load_train_config
from tinyminds.training.engine import train

TEXTS = [
    "The cat sat on the mat.",
    "Where are the kings of Rome, and who will follow them?",
    "She said that he had gone home early.",
]
"""Sentences for the tokenizer and logits comparison (written here, no data set's items)."""
PAIRS = [
    ("The dogs bark at night.", "The dogs barks at night."),
    ("Who did the king see?", "Who did the king see him?"),
    ("These plays are long.", "This plays are long."),
    ("He herself left.", "He himself left."),
    ("The queen has been crowned.", "The queen has be crowned."),
    ("Many lords arrived yesterday.", "Many lords arrives yesterday."),
]
"""Minimal pairs in BLiMP's format (good, bad), written here: the check's own, no BLiMP items."""
LOGIT_TOLERANCE = 1e-4
LOGLIK_TOLERANCE = 1e-3

CHILD = r"""
import json, sys
import torch, transformers
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

request = json.loads(open(sys.argv[1], encoding="utf-8").read())
out = {"transformers": transformers.__version__, "torch": torch.__version__, "models": {}}
for folder in request["folders"]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    texts = []
    for text in request["texts"]:
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits[0]
        texts.append({"keys": sorted(encoded.keys()), "ids": encoded["input_ids"][0].tolist(),
                      "processor_ids": processor(text)["input_ids"], "logits": logits.tolist()})
    entry = {"tokenizer_class": type(tokenizer).__name__,
             "processor_class": type(processor).__name__, "texts": texts}
    if request["lm_eval"]:
        import lm_eval
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
        lm = HFLM(pretrained=folder, backend="causal", dtype="float32", batch_size=8,
                  add_bos_token=False, device="cpu")
        sentences = [s for pair in request["pairs"] for s in pair]
        requests = [Instance(request_type="loglikelihood", doc={}, arguments=("", " " + s), idx=0)
                    for s in sentences]
        entry["lm_eval"] = lm_eval.__version__
        entry["loglikelihoods"] = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    out["models"][folder] = entry
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(out))
"""
"""Runs in the scratch environment: it may import transformers 4.x, torch and lm-eval, never
tinyminds (which needs transformers 5)."""


def run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n" + "\n".join(tail))
    return done.stdout


def scratch_environment(venv: Path, transformers_pin: str, lm_eval_pin: str | None) -> Path:
    """``venv``'s python, with torch (the project's version, first), transformers and lm-eval."""
    python = venv / "bin" / "python"
    wanted: dict[str, str | None] = {"transformers": transformers_pin}
    if lm_eval_pin:
        wanted.update(lm_eval=lm_eval_pin, accelerate=None)  # any accelerate
    probe = "import json, importlib; print(json.dumps({m: importlib.import_module(m).__version__ for m in %r}))"
    if python.is_file():
        try:
            found = json.loads(run([str(python), "-c", probe % list(wanted)]))
            if all(v is None or found[m] == v for m, v in wanted.items()):
                return python
        except SystemExit:
            pass
    torch_pin = torch.__version__.split("+")[0]
    print(f"building {venv}: torch {torch_pin}, transformers {transformers_pin}", flush=True)
    if not python.is_file():
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    run([*pip, f"torch=={torch_pin}"])  # first and pinned: an unpinned one pulls a CUDA build
    packages = [f"transformers=={transformers_pin}"]
    if lm_eval_pin:  # HFLM needs accelerate, which lm-eval's plain install leaves out
        packages += [f"lm-eval=={lm_eval_pin}", "accelerate"]
    run([*pip, *packages])
    return python


def fresh_models(work: Path) -> list[Path]:
    """A tiny GPT-2 and a tiny Llama trained 30 steps by tinyminds: freshly exported folders."""
    corpus = write_demo_corpus(work / "corpus")
    data = work / "data"
    prepare(corpus, data, PrepareOptions(vocab_size=1000))
    folders = []
    for recipe in ("gpt2-tiny", "llama-tiny"):
        out = work / recipe
        overrides = [f"data={data}", f"out={out}", "max_steps=30", "eval_chunks=64"]
        train(load_train_config(recipe, overrides))
        folders.append(out / "model")
    return folders


def this_side(folders: list[Path], work: Path) -> dict[str, Any]:
    """Tokenizer, processor, logits and tinyminds' pair scores under this transformers (5.x)."""
    pairs_dir = work / "pairs" / "blimp_filtered"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"sentence_good": g, "sentence_bad": b}) for g, b in PAIRS]
    (pairs_dir / "check_pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    side: dict[str, Any] = {"transformers": transformers.__version__, "models": {}}
    for folder in folders:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        processor = AutoProcessor.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        texts = []
        for text in TEXTS:
            encoded = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                logits = model(**encoded).logits[0]
            texts.append(
                {
                    "keys": sorted(encoded.keys()),
                    "ids": encoded["input_ids"][0].tolist(),
                    "processor_ids": processor(text)["input_ids"],
                    "logits": logits,
                }
            )
        result = evaluate(folder, ["blimp"], [pairs_dir.parent], work / "eval" / folder.parent.name)
        records = [json.loads(line) for line in result.pairs_path.read_text().splitlines()]
        side["models"][str(folder)] = {
            "tokenizer_class": type(tokenizer).__name__,
            "processor_class": type(processor).__name__,
            "texts": texts,
            "loglikelihoods": [value for r in records for value in (r["good"], r["bad"])],
        }
    return side


def _name(folder: Path) -> str:
    """``runs/gpt2-tiny/model`` -> ``gpt2-tiny``; any other folder by its own name."""
    return folder.parent.name if folder.name == "model" else folder.name


def compare(ours: dict[str, Any], theirs: dict[str, Any], lm_eval: bool) -> tuple[list[str], bool]:
    """The report's lines and whether every check passed."""
    ok = True
    lines = [
        f"transformers here {ours['transformers']}, there {theirs['transformers']} "
        f"(torch {theirs['torch']})",
        "",
        "| model | classes there (tokenizer, processor) | keys here | keys there | ids equal "
        "| max abs logit diff | max abs log-lik diff (tinyminds vs HFLM) |",
        "| --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for folder, mine in ours["models"].items():
        other = theirs["models"][folder]
        keys_here = sorted({k for t in mine["texts"] for k in t["keys"]})
        keys_there = sorted({k for t in other["texts"] for k in t["keys"]})
        ids_equal = all(
            a["ids"] == b["ids"] == b["processor_ids"] == a["processor_ids"]
            for a, b in zip(mine["texts"], other["texts"], strict=True)
        )
        logit_diff = max(
            (a["logits"] - torch.tensor(b["logits"])).abs().max().item()
            for a, b in zip(mine["texts"], other["texts"], strict=True)
        )
        loglik = "not run"
        passed = keys_here == keys_there == ["attention_mask", "input_ids"] and ids_equal
        passed = passed and logit_diff <= LOGIT_TOLERANCE
        if lm_eval:
            diff = max(
                abs(a - b)
                for a, b in zip(mine["loglikelihoods"], other["loglikelihoods"], strict=True)
            )
            loglik = f"{diff:.2e} (lm-eval {other['lm_eval']}, {len(PAIRS)} pairs)"
            passed = passed and diff <= LOGLIK_TOLERANCE
        ok = ok and passed
        lines.append(
            f"| {_name(Path(folder))} | {other['tokenizer_class']}, "
            f"{other['processor_class']} | {', '.join(keys_here)} | {', '.join(keys_there)} | "
            f"{'yes' if ids_equal else 'NO'} | {logit_diff:.2e} | {loglik} |"
        )
    lines += ["", "all checks passed" if ok else "A CHECK FAILED"]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(".venv-tf4"), help="scratch environment")
    parser.add_argument("--transformers", default="4.51.3", help="its transformers (4.51.3)")
    parser.add_argument("--lm-eval", default="0.4.13", help="its lm-eval version (0.4.13)")
    parser.add_argument("--skip-lm-eval", action="store_true", help="no HFLM comparison")
    parser.add_argument("--folder", type=Path, action="append", help="model folder(s) to check")
    parser.add_argument("--json", type=Path, help="also write the report's figures here")
    args = parser.parse_args(argv)
    set_quiet(True)
    lm_eval = not args.skip_lm_eval
    python = scratch_environment(args.venv, args.transformers, args.lm_eval if lm_eval else None)
    with tempfile.TemporaryDirectory(prefix="tinyminds-portability-") as temporary:
        work = Path(temporary)
        folders = [f.resolve() for f in args.folder] if args.folder else fresh_models(work)
        ours = this_side(folders, work)
        request = {
            "folders": [str(f) for f in folders],
            "texts": TEXTS,
            "pairs": PAIRS,
            "lm_eval": lm_eval,
        }
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        (work / "child.py").write_text(CHILD, encoding="utf-8")
        run(
            [
                str(python),
                str(work / "child.py"),
                str(work / "request.json"),
                str(work / "out.json"),
            ]
        )
        theirs = json.loads((work / "out.json").read_text(encoding="utf-8"))
    lines, ok = compare(ours, theirs, lm_eval)
    print("\n".join(lines))
    if args.json:
        figures = {"ok": ok, "transformers": [ours["transformers"], theirs["transformers"]]}
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
