"""GLUE by LoRA fine-tuning on a tiny GPT-2: only adapters and head train, and the command end to
end on a slice of the real BabyLM GLUE data (with a zero-shot task beside it), partial results kept.

The real-data test extracts ../shared/data/glue_filtered.tar.gz into a temporary folder (skipped
where it is absent) and keeps the first lines of each file, so that everything runs in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import shared_archive
from transformers import AutoModelForCausalLM

from tinyminds.cli import main
from tinyminds.data.tokenizer import load_tokenizer, save_hf_tokenizer, save_tokenizer
from tinyminds.evaluation import glue
from tinyminds.evaluation.glue_tasks import GLUE_TASKS, GlueData, load_glue
from tinyminds.models.zoo import ModelSpec, build_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SPEC = ModelSpec("gpt2-glue", "gpt2", 32, 2, 2, 64, paper=False)
LINES_PER_FILE = 40
"""Valid lines kept of each real file (training files keep `TRAIN_LINES`, so that
``--max-train-examples 64`` draws a sample)."""
TRAIN_LINES = 100


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def model_dir(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with the prepared Shakespeare tokenizer (1,000 tokens), saved as a run's model."""
    folder = tmp_path_factory.mktemp("runs") / "tiny-glue" / "model"
    tokenizer = load_tokenizer(prepared_data / "tokenizer")
    torch.manual_seed(0)
    build_model(SPEC, len(tokenizer)).save_pretrained(folder)
    save_tokenizer(tokenizer.backend_tokenizer, folder)
    (folder / "tinyminds.json").write_text(json.dumps({"recipe": "gpt2-tiny"}), encoding="utf-8")
    return folder


def lora_parameters(spec: ModelSpec, num_labels: int, r: int = 8) -> int:
    """LoRA on GPT-2's fused c_attn (hidden -> 3 hidden) in every layer, plus the score head."""
    per_layer = r * spec.hidden + 3 * spec.hidden * r
    return spec.layers * per_layer + spec.hidden * num_labels


def synthetic_glue(tmp_path: Path, task: str, n: int) -> GlueData:
    lines = [
        {"sentence1": f"The dog {i} runs home.", "sentence2": "A dog runs.", "label": i % 2}
        for i in range(n)
    ]
    folder = tmp_path / "glue_filtered"
    folder.mkdir()
    for split in ("train", "valid"):
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (folder / f"{task}.{split}.jsonl").write_text(text, encoding="utf-8")
    return load_glue([tmp_path])


def test_only_the_adapters_and_the_head_are_trained(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = synthetic_glue(tmp_path, "rte", 24)
    tokenizer = load_tokenizer(model_dir)
    built: list[torch.nn.Module] = []
    real_load = glue.load_classifier

    def keep(*args, **kwargs):
        built.append(real_load(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(glue, "load_classifier", keep)
    recipe = glue.GlueRecipe(epochs=2, batch_size=8)
    result = glue.fine_tune("rte", data, model_dir, tokenizer, recipe, torch.device("cpu"))
    model = built[0]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".lora_A." in name or ".lora_B." in name or "score.modules_to_save" in name
        for name in trainable
    )
    assert result.record["trainable_parameters"] == lora_parameters(SPEC, 2) == 2112
    assert result.record["trained"] == ["lora_A", "lora_B", "score"]
    assert result.record["lora_target_modules"] == ["c_attn"]
    # The base model's weights are those saved in the folder; the adapters moved away from 0.
    original = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    for name, value in model.named_parameters():
        if "base_layer" in name or name.endswith(("ln_1.weight", "wte.weight", "wpe.weight")):
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(value.detach(), original[key]), name
    lora_b = [p for name, p in model.named_parameters() if ".lora_B." in name]
    assert all(p.abs().sum() > 0 for p in lora_b)
    # 24 examples, batch 8: 3 steps an epoch, warm-up ceil(0.06 * 6) = 1 step.
    assert (result.record["steps"], result.record["warmup_steps"]) == (6, 1)
    assert len(result.record["valid_loss"]) == 2
    best = min(range(2), key=lambda i: result.record["valid_loss"][i]) + 1
    assert result.record["best_epoch"] == best
    assert len(result.scored) == 1 and len(result.scored[0].predictions) == 24


@pytest.fixture(scope="module")
def glue_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """evaluation_data/ with the first lines of every real GLUE file and a tiny BLiMP paradigm."""
    archive = shared_archive("glue_filtered.tar.gz")
    extracted = tmp_path_factory.mktemp("glue-archive")
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    root = tmp_path_factory.mktemp("evaluation_data")
    (root / "glue_filtered").mkdir()
    for path in sorted((extracted / "glue_filtered").glob("*.jsonl")):
        keep = TRAIN_LINES if path.name.endswith(".train.jsonl") else LINES_PER_FILE
        lines = path.read_text(encoding="utf-8").splitlines()[:keep]
        (root / "glue_filtered" / path.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    pair = {"sentence_good": "The dog runs.", "sentence_bad": "The dog run."}
    (root / "blimp_filtered").mkdir()
    (root / "blimp_filtered" / "agreement.jsonl").write_text(json.dumps(pair) + "\n")
    return root


def test_real_glue_data_through_the_command(
    model_dir: Path, glue_slice: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TINYMINDS_QUIET": "1"})
    command = [sys.executable, "-m", "tinyminds", "evaluate", str(model_dir), "--data"]
    command += [str(glue_slice), "--tasks", "blimp,glue", "--out", str(out), "--device", "cpu"]
    command += ["--max-train-examples", "64", "--epochs", "2"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]

    summary = json.loads((out / "tiny-glue.json").read_text())
    assert summary["complete"] and summary["tasks"]["blimp"]["n"] == 1
    section = summary["glue"]
    assert section["overrides"] == {"epochs": 2, "max_train_examples": 64}
    assert section["recipe"] | {"epochs": 32, "max_train_examples": None} == {
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "batch_size": 64,
        "epochs": 32,
        "warmup_ratio": 0.06,
        "seed": 42,
        "max_length": 128,
        "max_train_examples": None,
    }
    assert "valid file" in section["selection"]
    missing = {"boolq", "multirc", "qnli", "sst2"}  # no training file in BabyLM's release here
    assert section["missing"] == dict.fromkeys(sorted(missing), "no training file")
    assert section["pending"] == [] and list(section["tasks"]) == list(GLUE_TASKS)
    predictions = [
        json.loads(line) for line in (out / section["predictions_file"]).read_text().splitlines()
    ]
    for name, task in section["tasks"].items():
        assert task["metric"] == GLUE_TASKS[name].metric and task["n"] == LINES_PER_FILE
        assert task["baseline"] is not None and task["baseline_from"] in ("train", "valid")
        if name in missing:
            assert "score" not in task and task["baseline_from"] == "valid"
            continue
        low = -1.0 if task["metric"] == "mcc" else 0.0
        assert low <= task["score"] <= 1.0 and 0.0 <= task["baseline"] <= 1.0
        assert task["baseline_from"] == "train" and 1 <= task["best_epoch"] <= 2
        mine = [p for p in predictions if p["task"] == name]
        assert [p["index"] for p in mine] == list(range(LINES_PER_FILE))
        assert set(mine[0]) == {"task", "index", "label", "prediction"}
        if name == "mnli-mm":
            assert task["model"] == "mnli"
            continue
        assert (task["train_examples"], task["train_file_examples"]) == (64, TRAIN_LINES)
        assert task["epochs"] == 2 and len(task["valid_loss"]) == 2
        assert task["trainable_parameters"] == lora_parameters(SPEC, GLUE_TASKS[name].num_labels)
        assert task["trainable_parameters"] < 0.05 * task["frozen_parameters"]
    macro = section["macro"]
    assert macro["tasks"] == ["mnli", "mrpc", "qqp", "rte", "wsc"] and not macro["complete"]
    assert (macro["covered"], macro["of"]) == (5, 9)
    assert "| QNLI | accuracy | missing: no training file |" in run.stdout
    assert "macro average over 5 of 9 tasks only" in run.stdout
    assert f"GLUE predictions: {out / 'tiny-glue.glue.jsonl'}" in run.stdout


def test_finished_glue_tasks_are_kept_when_a_later_one_fails(
    model_dir: Path, glue_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fine_tune = glue.fine_tune

    def failing_on_mrpc(task: str, *args, **kwargs):
        if task == "mrpc":
            raise KeyboardInterrupt  # or out of memory, a killed job...
        return real_fine_tune(task, *args, **kwargs)

    monkeypatch.setattr(glue, "fine_tune", failing_on_mrpc)
    out = tmp_path / "results"
    command = ["evaluate", str(model_dir), "--data", str(glue_slice), "--tasks", "glue", "-q"]
    command += ["--out", str(out), "--epochs", "1", "--max-train-examples", "16"]
    assert main(command) == 130
    summary = json.loads((out / "tiny-glue.json").read_text())
    assert not summary["complete"] and summary["pending"] == ["glue"]
    section = summary["glue"]
    assert [t for t, e in section["tasks"].items() if "score" in e] == ["cola", "mnli", "mnli-mm"]
    assert section["pending"] == ["mrpc", "qqp", "rte", "wsc"]
    lines = (out / "tiny-glue.glue.jsonl").read_text().splitlines()
    assert len(lines) == 3 * LINES_PER_FILE
    assert sorted(p.name for p in out.iterdir()) == ["tiny-glue.glue.jsonl", "tiny-glue.json"]


def test_a_tokenizer_that_cannot_pad_is_refused_before_training(
    model_dir: Path, glue_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "no-pad"
    AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(folder)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    save_hf_tokenizer(tokenizer, folder)
    command = ["evaluate", str(folder), "--data", str(glue_slice), "--tasks", "glue"]
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no-pad: the tokenizer has neither a PAD nor an EOS token" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
