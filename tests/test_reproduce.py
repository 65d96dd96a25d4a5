"""`tinyminds reproduce --scale tiny` end to end with a few steps per model: the report's tables
read back against the results files, reuse, and a changed setting rerunning only its dependants."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import small_evaluation_data

from tinyminds.cli import main
from tinyminds.demo import EVAL_DATA_ENV
from tinyminds.evaluation.published import match_published
from tinyminds.reproduce.graph import run_lock
from tinyminds.reproduce.stages import GRID

ZERO_SHOT = ("blimp", "supplement", "ewok")


def table(report: str, heading: str) -> list[dict[str, str]]:
    """The Markdown table under ``## heading`` as one dict per row (header -> cell)."""
    section = report.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
        for row in rows[2:]
    ]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_inputs_are_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVAL_DATA_ENV, raising=False)
    out = tmp_path / "run"
    code, _, err = run(
        capsys,
        "--scale",
        "mini",
        "--corpus",
        str(tmp_path / "nope"),
        "--out",
        str(out),
        "--skip-evaluation",
    )
    assert code == 2 and f"corpus folder {tmp_path / 'nope'} does not exist" in err
    code, _, err = run(capsys, "--scale", "paper", "--out", str(out), "--skip-evaluation")
    assert code == 2 and "--scale paper needs --corpus DIR" in err
    code, _, err = run(capsys, "--scale", "tiny", "--out", str(out))
    assert code == 2 and "no evaluation data (looked at:" in err and "--skip-evaluation" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not (out / "stages").exists()


def test_the_paper_scale_needs_a_gpu_or_an_explicit_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shakespeare_corpus: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    args = ["--scale", "paper", "--corpus", str(shakespeare_corpus), "--skip-evaluation"]
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2 and "--scale paper trains the paper's models: it needs a CUDA GPU" in err
    code, out, _ = run(capsys, *args, "--out", str(tmp_path / "run"), "--dry-run")
    assert code == 0 and "distilledgpt-44m" in out  # the graph can be looked at anywhere


def test_a_second_run_into_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shakespeare_corpus: Path
) -> None:
    out = tmp_path / "run"
    with run_lock(out):
        code, _, err = run(
            capsys, "--corpus", str(shakespeare_corpus), "--out", str(out), "--skip-evaluation"
        )
    assert code == 2 and "is in use by another tinyminds reproduce" in err
    assert not (out / "stages").exists()


@pytest.mark.slow
def test_tiny_grid_report_reuse_and_invalidation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shakespeare_corpus: Path
) -> None:
    eval_data = small_evaluation_data(tmp_path / "evaluation_data")
    if eval_data is None:
        pytest.skip("no evaluation archives in ../shared/data")
    out = tmp_path / "run"
    base = ["--corpus", str(shakespeare_corpus), "--eval-data", str(eval_data), "--out", str(out)]
    base += ["--max-steps", "3"]
    code, stdout, err = run(capsys, *base, "--max-items", "4")
    assert code == 0, err[-3000:]
    evaluated = [e for e in GRID if e.causal_lm]  # not the generator, a masked LM
    # prepare + models + their evaluations + compare
    assert (
        f": {1 + len(GRID) + len(evaluated) + 1} stages ran, 0 reused, 0 skipped, 0 failed"
        in stdout
    )

    report = (out / "report.md").read_text(encoding="utf-8")
    results = {}
    for entry in evaluated:
        (path,) = out.glob(f"stages/eval-{entry.stage}-*/{entry.stage}.json")
        results[entry.paper_name] = json.loads(path.read_text(encoding="utf-8"))
    labels = {"blimp": "BLiMP filtered", "supplement": "BLiMP supplement", "ewok": "EWoK"}
    for heading, which in (("Table 2", 2), ("Table 3", 3)):
        rows = table(report, heading)
        assert [row["model"] for row in rows] == [e.paper_name for e in GRID if e.table == which]
        for row in rows:
            published = [p for p in match_published(row["model"]) if p.label == "paper"]
            for task in ZERO_SHOT:
                label = labels[task]
                expected = (
                    f"{published[0].scores[task]:.1f}"
                    if published and task in published[0].scores
                    else "–"
                )
                assert row[f"{label} (paper)"] == expected
                if row["model"] in results:
                    accuracy = results[row["model"]]["tasks"][task]["accuracy"]
                    assert row[label] == f"{100 * accuracy:.1f}", (row["model"], task)
                else:
                    assert row[label] == "–"
    exposure = {row["student"]: row for row in table(report, "Exposure")}
    assert set(exposure) == {e.paper_name for e in GRID if e.role == "student"}
    assert all(row["total <= 100M"] == "yes" for row in exposure.values())
    configs = {row["model"]: row for row in table(report, "Table 1")}
    assert configs["DistilledGPT-44M"]["steps run"] == "3"
    assert configs["DistilledGPT-44M"]["teachers"] == "GPT2-44M, Llama-60M"
    for entry in evaluated:
        parameters = results[entry.paper_name]["model"]["parameters"]
        assert configs[entry.paper_name]["parameters"] == f"{parameters:,}"
    comparison = json.loads(next(out.glob("stages/compare-*/comparison.json")).read_text())
    tests = {row["task"]: row for row in table(report, "Wilcoxon tests")}
    for c in comparison["comparisons"]:
        assert tests[labels[c["task"]]]["n"] == str(c["n"])
    stages = {row["stage"]: row for row in table(report, "Stages")}
    assert stages["gpt2-44m"]["state"] == "ran"
    assert stages["maskedadversarialllama-58m"]["state"] == "ran"
    for chart in ("learning_curves", "student_losses", "scores"):
        assert f"]({chart}.png)" in report
        assert (out / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"

    # A rerun reuses everything.
    code, stdout, _ = run(capsys, *base, "--max-items", "4")
    assert code == 0 and f": 0 stages ran, {1 + len(GRID) + len(evaluated) + 1} reused" in stdout
    # A changed recipe setting: that model, its evaluation and the comparison only.
    code, stdout, _ = run(
        capsys, *base, "--max-items", "4", "--dry-run", "--set", "babyllama-58m.lr=1e-3"
    )
    states = dict(re.findall(r"^  (\S+) +[0-9a-f]{12}  (\w+(?: \w+)?)", stdout, re.MULTILINE))
    stale = {name for name, state in states.items() if state == "stale"}
    assert stale == {"babyllama-58m", "eval-babyllama-58m", "compare"}
    assert {states[name] for name in states if name not in stale} == {"done"}
    # Another evaluation setting: the dry run shows the evaluations stale, the models done...
    code, stdout, _ = run(capsys, *base, "--max-items", "3", "--dry-run")
    states = dict(re.findall(r"^  (\S+) +[0-9a-f]{12}  (\w+(?: \w+)?)", stdout, re.MULTILINE))
    assert states["gpt2-44m"] == "done" and states["eval-gpt2-44m"] == "stale"
    assert states["compare"] == "stale" and states["maskedadversarialllama-58m"] == "done"
    # ... --only runs one stage (its model is done) ...
    code, stdout, _ = run(capsys, *base, "--max-items", "3", "--only", "eval-gpt2-44m")
    assert code == 0 and ": 1 stages ran, 0 reused" in stdout  # gpt2-44m is done: not selected
    # ... and the whole run reruns the other evaluations and the comparison only.
    code, stdout, _ = run(capsys, *base, "--max-items", "3")
    assert code == 0 and f": {len(evaluated)} stages ran, {len(GRID) + 2} reused" in stdout
    # --prune: the evaluations and the comparison scored on 4 pairs are what the grid no longer uses.
    code, stdout, _ = run(capsys, *base, "--max-items", "3", "--dry-run", "--prune")
    assert code == 0 and f"--prune would delete {len(evaluated) + 1} unused stage" in stdout
    code, stdout, _ = run(capsys, *base, "--max-items", "3", "--prune")
    assert code == 0 and ": 0 stages ran" in stdout
    assert len(list((out / "stages").iterdir())) == 1 + len(GRID) + len(evaluated) + 1


def test_table_4_puts_measured_glue_beside_the_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyminds.reproduce import report

    def fake_results(graph: object, stage: str) -> dict[str, object] | None:
        if stage != "distilledgpt-44m":
            return None  # BabyLlama-58M not fine-tuned: its measured cells stay empty
        tasks = {
            "rte": {"score": 0.5543, "baseline": 0.527},
            "cola": {"score": 0.012},
            "boolq": {"missing": "no training file"},
        }
        macro = {"score": 0.61, "baseline": 0.55}
        return {"glue": {"tasks": tasks, "macro": macro, "overrides": {"epochs": 3}}}

    monkeypatch.setattr(report, "_results", fake_results)
    one_seed = SimpleNamespace(seeds=())  # the run's settings: only their seeds are read
    lines = report.table_4(None, one_seed)  # type: ignore[arg-type]
    assert lines is not None
    rows = table("## t\n" + "\n".join(lines), "t")
    by_task = {row["GLUE task"]: row for row in rows}
    assert by_task["rte"]["DistilledGPT-44M"] == "55.4"
    assert by_task["rte"]["DistilledGPT-44M (paper)"] == "55.4"
    assert by_task["rte"]["BabyLlama-58M"] == "–"
    assert by_task["rte"]["BabyLlama-58M (paper)"] == "49.6"
    assert by_task["rte"]["DistilledGPT-44M majority"] == "52.7"
    assert by_task["cola"]["DistilledGPT-44M"] == "1.2"  # MCC x 100
    assert by_task["mrpc"]["DistilledGPT-44M"] == "–"
    macro = rows[-1]
    assert macro["DistilledGPT-44M"] == "61.0" and macro["DistilledGPT-44M (paper)"] == "68.8"
    assert lines[-1] == (
        "- DistilledGPT-44M: the paper's recipe with epochs 3; not scored: boolq: no training file."
    )
    monkeypatch.setattr(report, "_results", lambda graph, stage: None)
    assert report.table_4(None, one_seed) is None  # type: ignore[arg-type]


def test_small_scales_fine_tune_glue_briefly_and_key_it(tmp_path: Path) -> None:
    from tinyminds.reproduce.stages import SCALES, Settings, build_stages

    (tmp_path / "glue_filtered").mkdir()

    def eval_specs(scale: str) -> dict[str, dict[str, object]]:
        settings = Settings(SCALES[scale], tmp_path, tmp_path, list(ZERO_SHOT), 0, None, glue=True)
        stages = build_stages(settings)
        return {s.name: s.spec for s in stages if s.name.startswith("eval-")}

    tiny, mini, paper = eval_specs("tiny"), eval_specs("mini"), eval_specs("paper")
    assert tiny["eval-distilledgpt-44m"]["glue_recipe"] == {"epochs": 1, "max_train_examples": 64}
    assert mini["eval-babyllama-58m"]["glue_recipe"] == {"epochs": 3, "max_train_examples": 2000}
    assert paper["eval-distilledgpt-44m"]["glue_recipe"] == {}  # the recipe's 32 epochs, all data
    assert (
        tiny["eval-gpt2-44m"]["glue_recipe"] == {} and "glue" not in tiny["eval-gpt2-44m"]["tasks"]
    )


def test_the_mini_scale_resolves_and_validates_every_model_ten_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shakespeare_corpus: Path
) -> None:
    from tinyminds.reproduce import make_settings
    from tinyminds.reproduce.stages import members, resolved_config

    # The dry run resolves every recipe of the grid, for both seeds, without training anything.
    out = tmp_path / "run"
    args = ["--scale", "mini", "--corpus", str(shakespeare_corpus), "--out", str(out)]
    code, stdout, err = run(capsys, *args, "--skip-evaluation", "--seeds", "42,7", "--dry-run")
    assert code == 0, err
    for entry in GRID:
        assert re.search(rf"^  {entry.stage} +[0-9a-f]{{12}}  to run", stdout, re.MULTILINE)
        if entry.role != "floor":
            assert re.search(rf"^  {entry.stage}-seed7 +[0-9a-f]{{12}}", stdout, re.MULTILINE)
    assert not (out / "stages").exists()

    settings = make_settings("mini", out, shakespeare_corpus, None, [], seeds=[42, 7])
    budgets = {}
    for member in members(settings):
        config = resolved_config(member, settings, [])
        assert config.seed == member.seed
        if member.entry.kind == "init":
            continue
        budgets[member.entry.stage] = config.max_steps
        # Learning curves: at least ten validation points per model.
        assert config.eval_every and config.max_steps // config.eval_every >= 10, member.stage
    chain = ("gpt2-44m", "llama-60m", "distilledgpt-44m")
    assert {budgets[name] for name in chain} == {900}
    assert {budgets[e.stage] for e in GRID if e.stage in budgets and e.stage not in chain} <= {
        600,
        300,
    }
