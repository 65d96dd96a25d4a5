"""The README's two commands: `make demo` (tinyminds demo) and `make test` (this suite)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

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
    started = time.perf_counter()
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"outputs in {out}/" in first.stdout
    for model in ("gpt2-tiny", "llama-tiny"):
        row = next(line for line in first.stdout.splitlines() if line.startswith(model))
        val_ce = float(row.split()[2])
        assert val_ce < 6.5, row  # uniform over the 4,000-token vocabulary would be 8.29
        folder = out / "runs" / model / "model"
        AutoModelForCausalLM.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
        assert any(r["kind"] == "val" for r in read_metrics(out / "runs" / model))
    assert (out / "data" / "manifest.json").is_file()

    started = time.perf_counter()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused" in second.stdout
    assert time.perf_counter() - started < first_seconds / 2
