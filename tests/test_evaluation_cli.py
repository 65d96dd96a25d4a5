"""`tinyminds evaluate` end to end: one-line errors, kept partial results, and the real data.

The real-data test extracts ../shared/data's BLiMP, supplement and EWoK archives into a temporary
folder (skipped where they are absent), runs the command on a tiny model and checks the files it
writes, that the scores equal a one-at-a-time reference, and that no EWoK text leaks into the output
or the results (EWoK's licence forbids redistributing its items). Failures report counts and indices,
never the items themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import shared_archive
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from tinyminds.cli import main
from tinyminds.data.tokenizer import BOS_ID, save_tokenizer, train_tokenizer
from tinyminds.errors import UserError
from tinyminds.evaluation import zero_shot
from tinyminds.evaluation.zero_shot import evaluate
from tinyminds.models.zoo import ModelSpec, build_model, get_spec

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def tokenizer_object():
    lines = [
        f"the child {i} sees a red ball and the dog runs to house {i % 7}." for i in range(300)
    ]
    return train_tokenizer(lines, vocab_size=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_object) -> Path:
    """A tinyminds-style run folder's model: runs/tiny-run/model with tinyminds.json."""
    folder = tmp_path_factory.mktemp("runs") / "tiny-run" / "model"
    torch.manual_seed(0)
    build_model(ModelSpec("gpt2-eval", "gpt2", 32, 2, 2, 64, paper=False), 300).save_pretrained(
        folder
    )
    save_tokenizer(tokenizer_object, folder)
    (folder / "tinyminds.json").write_text(json.dumps({"recipe": "gpt2-tiny"}), encoding="utf-8")
    return folder


@pytest.fixture
def eval_data(tmp_path: Path) -> Path:
    root = tmp_path / "evaluation_data"
    good = {"sentence_good": "The dog runs.", "sentence_bad": "The dog run."}
    same = {"sentence_good": "A child sees.", "sentence_bad": "A child sees."}
    write_jsonl(root / "blimp_filtered" / "agreement.jsonl", [good, same, good])
    write_jsonl(root / "blimp_filtered" / "island.jsonl", [good])
    ewok = {"Context1": "The ball is red.", "Target1": "It is red.", "Target2": "It is blue."}
    write_jsonl(root / "ewok_filtered" / "colours.jsonl", [ewok, ewok])
    return root


def test_unknown_task_is_one_line_with_the_known_names(
    eval_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["evaluate", str(tmp_path), "--tasks", "blimp,superglue", "--data", str(eval_data)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err == (
        "tinyminds evaluate: error: unknown task 'superglue'; known tasks: blimp, supplement, "
        "ewok, blimp_fast, supplement_fast, ewok_fast, entity_tracking, entity_tracking_fast, "
        "wug_adj, reading, glue\n"
    )


def test_model_folder_without_tokenizer_is_one_line_naming_it(
    eval_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bare-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    assert main(["evaluate", str(folder), "--data", str(eval_data), "--tasks", "blimp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{folder} has no tokenizer" in err
    assert main(["evaluate", str(tmp_path / "absent"), "--data", str(eval_data)]) == 2
    assert "absent does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_results_files_and_table(
    model_dir: Path, eval_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = ["evaluate", str(model_dir), "--tasks", "blimp,ewok", "--data", str(eval_data)]
    assert main([*args, "--out", str(out), "--device", "cpu", "--batch-size", "2", "-q"]) == 0
    stdout = capsys.readouterr().out
    summary = json.loads((out / "tiny-run.json").read_text())  # named after the run folder
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert summary["model"]["name"] == "tiny-run" and summary["model"]["recipe"] == "gpt2-tiny"
    assert summary["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["model"]["path"] == str(model_dir.resolve())
    assert summary["complete"] and summary["device"] == "cpu" and summary["tinyminds_version"]
    blimp = summary["tasks"]["blimp"]
    assert blimp["prefix_token"] == {"kind": "BOS", "token": "<s>", "id": BOS_ID}
    assert summary["tasks"]["ewok"]["prefix_token"] is None
    assert list(blimp["subtasks"]) == ["agreement", "island"] and blimp["n"] == 4
    assert blimp["ties"] == summary["ties"] == 1
    accuracies = [s["accuracy"] for s in blimp["subtasks"].values()]
    assert blimp["accuracy"] == pytest.approx(sum(accuracies) / 2)
    file = eval_data / "blimp_filtered" / "island.jsonl"
    assert blimp["subtasks"]["island"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    pairs = [json.loads(line) for line in (out / "tiny-run.pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 6 and pairs[1]["tie"] and pairs[1]["correct"]
    assert set(pairs[0]) == {"task", "subtask", "index", "good", "bad", "correct", "tie"}
    assert "| task | accuracy (%) |" in stdout and f"results: {out / 'tiny-run.json'}" in stdout
    # --max-items limits each subtask; --name names the files.
    assert main([*args, "--out", str(out), "--max-items", "1", "--name", "quick", "-q"]) == 0
    quick = json.loads((out / "quick.json").read_text())
    assert quick["max_items"] == 1 and quick["tasks"]["blimp"]["n"] == 2


@pytest.mark.slow
def test_tokenizer_without_bos_eos_or_pad(
    model_dir: Path, eval_data: Path, tmp_path: Path, tokenizer_object
) -> None:
    folder = tmp_path / "no-specials"
    AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer_object).save_pretrained(str(folder))
    assert AutoTokenizer.from_pretrained(str(folder)).bos_token is None
    with pytest.raises(UserError, match=r"no-specials: the tokenizer has no BOS, EOS or PAD token"):
        evaluate(folder, ["ewok", "blimp"], [eval_data], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any scoring
    # EWoK conditions on its context, so it needs no prefix token.
    result = evaluate(folder, ["ewok"], [eval_data], tmp_path / "out")
    assert result.summary["tasks"]["ewok"]["prefix_token"] is None


@pytest.mark.slow
def test_a_masked_lm_is_refused(eval_data: Path, tmp_path: Path, tokenizer_object) -> None:
    folder = tmp_path / "electra"
    build_model(get_spec("electra-tiny"), 301).save_pretrained(folder)
    save_tokenizer(tokenizer_object, folder)
    with pytest.raises(
        UserError, match=r"electra is not a causal language model \(saved as Electra"
    ):
        evaluate(folder, ["blimp"], [eval_data], tmp_path / "out")


@pytest.mark.slow
def test_finished_tasks_are_kept_when_a_later_task_fails(
    model_dir: Path,
    eval_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_score_task = zero_shot.score_task

    def failing_on_ewok(task: str, *args, **kwargs):
        if task == "ewok":
            raise KeyboardInterrupt  # or out of memory, a crash, a killed job...
        return real_score_task(task, *args, **kwargs)

    monkeypatch.setattr(zero_shot, "score_task", failing_on_ewok)
    out = tmp_path / "results"
    command = ["evaluate", str(model_dir), "--data", str(eval_data), "--out", str(out), "-q"]
    assert main([*command, "--tasks", "blimp,ewok"]) == 130
    assert "interrupted" in capsys.readouterr().err
    summary = json.loads((out / "tiny-run.json").read_text())
    assert summary["complete"] is False and summary["pending"] == ["ewok"]
    assert summary["tasks"]["blimp"]["n"] == 4
    assert len((out / "tiny-run.pairs.jsonl").read_text().splitlines()) == 4
    assert sorted(p.name for p in out.iterdir()) == ["tiny-run.json", "tiny-run.pairs.jsonl"]


# --- the real BabyLM evaluation data -------------------------------------------------------------


@pytest.fixture(scope="module")
def babylm_evaluation_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BLiMP, supplement and EWoK extracted into a temporary evaluation_data/ folder."""
    archives = [
        shared_archive(f"{task}_filtered.tar.gz") for task in ("blimp", "supplement", "ewok")
    ]
    root = tmp_path_factory.mktemp("evaluation_data")
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return root


def ewok_texts(root: Path, first: int) -> list[str]:
    """The first items' texts of every EWoK file (long enough not to match by chance)."""
    texts = []
    for path in sorted((root / "ewok_filtered").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines()[:first]:
            item = json.loads(line)
            texts += [item[k] for k in ("Context1", "Target1", "Target2") if len(item[k]) >= 12]
    return texts


@pytest.mark.slow
def test_real_data_through_the_command(
    model_dir: Path, babylm_evaluation_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    env = {**os.environ, **ONE_THREAD_ENV, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    env.pop("TINYMINDS_QUIET", None)  # status lines and bars on: they must not leak EWoK either
    command = [sys.executable, "-m", "tinyminds", "evaluate", str(model_dir)]
    command += ["--data", str(babylm_evaluation_data), "--max-items", "3", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]

    summary = json.loads((out / "tiny-run.json").read_text())
    counts = {name: task["subtask_count"] for name, task in summary["tasks"].items()}
    assert counts == {"blimp": 67, "supplement": 5, "ewok": 11}
    for name, task in summary["tasks"].items():
        assert task["n"] == 3 * counts[name] and 0.0 <= task["accuracy"] <= 1.0
        for sub in task["subtasks"].values():
            data = Path(sub["file"]).read_bytes()
            assert sub["sha256"] == hashlib.sha256(data).hexdigest()
    pairs_text = (out / "tiny-run.pairs.jsonl").read_text()
    pairs = [json.loads(line) for line in pairs_text.splitlines()]
    assert len(pairs) == 3 * (67 + 5 + 11)
    assert "<s> (BOS, id 1)" in run.stderr and "| EWoK |" in run.stdout

    # The command's EWoK scores are those of the one-at-a-time reference (context, " " + target).
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ewok_pairs = [p for p in pairs if p["task"] == "ewok"]
    for record in ewok_pairs[:6]:
        path = babylm_evaluation_data / "ewok_filtered" / f"{record['subtask']}.jsonl"
        item = json.loads(path.read_text(encoding="utf-8").splitlines()[record["index"]])
        context = tokenizer(item["Context1"], add_special_tokens=False)["input_ids"]
        for key, target in (("good", item["Target1"]), ("bad", item["Target2"])):
            target_ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([context + target_ids])).logits[0].log_softmax(-1)
            expected = sum(float(logits[len(context) - 1 + j, t]) for j, t in enumerate(target_ids))
            assert abs(record[key] - expected) < 1e-4, (record["subtask"], record["index"], key)

    # Nothing of EWoK's text in the output or the results (indices only in a failure message).
    everything = run.stdout + run.stderr + (out / "tiny-run.json").read_text() + pairs_text
    texts = ewok_texts(babylm_evaluation_data, first=3)
    assert len(texts) >= 60
    leaked = [i for i, text in enumerate(texts) if text in everything]
    assert not leaked, f"{len(leaked)} EWoK texts appear in the output or the results"
