"""Same seed, same data, same weights: the check a refactor must pass (issue 14 part 6).

Runs, through the command line only (so that the check outlives any change of the internal
APIs), a small pipeline on the embedded Shakespeare corpus: prepare (a 1,000-token BPE), two
teachers and an ELECTRA generator trained with CE / MLM, a student distilled from the teacher
cache (the sampled cache, BabyLlama's loss), a contrastive student from the cache and a MATE-KD
student (the KD term on the original text from the cache). Each run is a few steps on one
thread. It then hashes every exported model's weights (SHA-256 over the tensors' names, dtypes,
shapes and bytes, in name order) and writes them as JSON; with ``--reference`` it compares them
with an earlier run's file and prints one row per model: the same weights bit for bit, or not.

Run it on main before a change and on the change, on the same machine and torch:

    python benchmarks/check_bit_identity.py --json before.json
    python benchmarks/check_bit_identity.py --reference before.json

It exits with status 1 where any model differs. It takes about 30 seconds on two CPU cores.
The digests of main at the fused-loss commit (a5004ba) are in
`docs/results/bit-identity-2026-12-06.json` (the same machine and torch are needed to compare).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinyminds.data.demo_corpus import write_demo_corpus

STEPS = 12
"""Optimizer steps of every run: enough for a learning-rate schedule and a MATE-KD round."""

COMMON = [f"max_steps={STEPS}", "batch_size=8", "eval_chunks=32", "seed=3", "device=cpu"]


def tinyminds(*args: str) -> None:
    """Run ``python -m tinyminds ARGS`` on one thread; stop with its output if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TINYMINDS_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tinyminds", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"tinyminds {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def weights_digest(model_dir: Path) -> str:
    """SHA-256 over every tensor of the model's safetensors files (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors = load_file(str(path))
        for name in sorted(tensors):
            tensor = tensors[name].contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_pipeline(work: Path) -> dict[str, str]:
    """Train every model of the check in ``work``; their weight digests by name."""
    corpus = write_demo_corpus(work / "corpus")
    data = work / "data"
    tinyminds("prepare", str(corpus), "--out", str(data), "--vocab-size", "1000")
    runs = work / "runs"
    for recipe in ("gpt2-tiny", "llama-tiny", "electra-tiny"):
        tinyminds("train", recipe, f"data={data}", f"out={runs / recipe}", *COMMON)
    teachers = f"teachers=[{runs / 'gpt2-tiny' / 'model'},{runs / 'llama-tiny' / 'model'}]"
    students = {
        "distill-tiny (cached)": ["distill-tiny", "teacher_cache=true"],
        "contrastive-tiny (cached)": ["contrastive-tiny", "teacher_cache=true"],
        "mate-tiny (cached)": [
            "mate-tiny",
            "teacher_cache=true",
            f"generator={runs / 'electra-tiny' / 'model'}",
            "generator_steps=2",
            "student_steps=5",
        ],
    }
    for name, (recipe, *settings) in students.items():
        out = runs / name.split()[0]
        tinyminds("distill", recipe, f"data={data}", f"out={out}", teachers, *COMMON, *settings)
    names = ["gpt2-tiny", "llama-tiny", "electra-tiny", *students]
    return {name: weights_digest(runs / name.split()[0] / "model") for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the digests here")
    parser.add_argument("--reference", type=Path, help="an earlier run's --json to compare with")
    args = parser.parse_args()
    reference = None
    if args.reference:
        try:
            reference = json.loads(args.reference.read_text(encoding="utf-8"))["digests"]
        except (OSError, ValueError, KeyError) as error:
            sys.exit(f"--reference {args.reference}: not a digest file of this script ({error})")
    with tempfile.TemporaryDirectory(prefix="bit-identity-") as tmp:
        digests = run_pipeline(Path(tmp))
    machine = f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}"
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "digests": digests}, indent=2) + "\n")
    print(f"{STEPS} steps per run, one thread; {machine}\n")
    print("| model | weights (SHA-256, first 16) | reference | bit-identical |")
    print("| --- | --- | --- | --- |")
    differ = False
    for name, digest in digests.items():
        before = (reference or {}).get(name)
        same = "-" if reference is None else ("yes" if before == digest else "**no**")
        differ |= same == "**no**"
        print(f"| {name} | {digest[:16]} | {(before or '-')[:16]} | {same} |")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
