"""The README's two commands: `make demo` (tinyminds demo) and `make test` (this suite)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EVAL_SUBTASKS, SHARED_DATA, small_evaluation_data
from transformers import AutoModelForCausalLM, AutoTokenizer

from tinyminds.demo import DEMO_EVAL_MAX_ITEMS, DEMO_MAX_STEPS_ENV, DEMO_MODELS, EVAL_DATA_ENV
from tinyminds.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the quick start has a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_make_demo_and_make_test() -> None:
    assert quick_start_commands() == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo: .*\n\t.*tinyminds demo$", makefile, re.MULTILINE)
    assert re.search(r"^test: .*\n\t.*-m pytest", makefile, re.MULTILINE)
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_demo_runs_end_to_end_and_reuses_its_work(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "tinyminds", "demo", "--out", str(out)]
    eval_data = small_evaluation_data(tmp_path / "evaluation_data")
    env = {k: v for k, v in os.environ.items() if k != EVAL_DATA_ENV}
    # The demo is `tinyminds reproduce --scale tiny`; a few steps per model keep the suite fast
    # (`make demo` runs the full 100 steps per model).
    env[DEMO_MAX_STEPS_ENV] = "4"
    started = time.perf_counter()
    first = subprocess.run(
        [*command, *(["--eval-data", str(eval_data)] if eval_data else [])],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"outputs in {out}/" in first.stdout
    report = (out / "report.md").read_text(encoding="utf-8")
    # Without any evaluation score the report still says whether the models learned: dev CE for
    # every demo model, the floor, and the student against its teachers.
    quality = report.split("## Quality: did the models learn?", 1)[1].split("\n## ", 1)[0]
    for name in ("Untrained GPT2-44M", "GPT2-44M", "Llama-60M", "DistilledGPT-44M"):
        assert re.search(
            rf"\| {name} \| \w+ \| 4 \| [0-9.]+ \| [0-9]+\.[0-9]{{4}} \|", quality
        ) or (name == "Untrained GPT2-44M" and f"| {name} | floor | 0 |" in quality), name
    assert "| DistilledGPT-44M | " in quality.split("Each student against its teachers", 1)[1]
    uniform = math.log(4000)  # the CE of a uniform guess over the 4,000-token vocabulary
    assert DEMO_MODELS == ("untrained", "gpt2-44m", "llama-60m", "distilledgpt-44m")
    for stage in DEMO_MODELS:
        row = next(line for line in first.stdout.splitlines() if line.startswith(stage + " "))
        val_ce = float(row.split()[3])
        if stage in ("gpt2-44m", "llama-60m"):  # trained on CE alone: already below uniform
            assert val_ce < uniform - 0.05, row
        else:
            # The untrained model sits near uniform; after 4 steps a student has followed
            # teachers that are themselves still close to uniform: it must not diverge.
            assert val_ce < uniform + 0.05, row
        (folder,) = out.glob(f"stages/{stage}-*/run/model")
        AutoModelForCausalLM.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
        if stage != "untrained":  # exported at initialisation: nothing trained, nothing logged
            assert any(r["kind"] == "val" for r in read_metrics(folder.parent))

    assert len(list(out.glob("stages/prepare-*/data/manifest.json"))) == 1

    started = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused" in second.stdout and " 0 stages ran" in second.stdout
    assert time.perf_counter() - started < first_seconds / 2
    # Without evaluation data the demo says how to get it and still succeeds.
    assert "No evaluation data, so the demo skipped its evaluation stage" in second.stdout
    assert "https://osf.io/ad7qg/" in second.stdout

    if eval_data is None:
        pytest.skip(f"demo checked; its evaluation stage was not: no archives in {SHARED_DATA}")
    for model in ("distilledgpt-44m", "gpt2-44m", "llama-60m"):
        (path,) = out.glob(f"stages/eval-{model}-*/{model}.json")
        summary = json.loads(path.read_text(encoding="utf-8"))
        assert summary["complete"] and summary["max_items"] == DEMO_EVAL_MAX_ITEMS
        counts = {task: entry["subtask_count"] for task, entry in summary["tasks"].items()}
        assert counts == EVAL_SUBTASKS
        for task, entry in summary["tasks"].items():
            assert entry["n"] == DEMO_EVAL_MAX_ITEMS * EVAL_SUBTASKS[task], (model, task)
    # The demo runs the DistilledGPT-44M chain only: no BabyLlama-58M, so no paper comparison.
    assert not list(out.glob("stages/compare-*"))
    assert not list(out.glob("stages/babyllama-58m-*"))
    for chart in ("learning_curves", "student_losses", "scores"):
        assert (out / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    # EWoK's items never reach the output (the test reads them, never prints them).
    for path in sorted((eval_data / "ewok_filtered").glob("*.jsonl")):
        item = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        if len(item["Target1"]) >= 12:  # long enough not to appear by chance
            assert item["Target1"] not in first.stdout + first.stderr, path.name
