"""GLUE the BabyLM 2025 way: the head, the pooled position, the padding side, the schedule, the
strict best-epoch rule, and a tiny end-to-end run on synthetic RTE files written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tinyminds.data.tokenizer import save_tokenizer, train_tokenizer
from tinyminds.evaluation.glue2025 import (
    Classifier,
    Glue2025Recipe,
    _batch,
    lr_factor,
)
from tinyminds.evaluation.zero_shot import evaluate
from tinyminds.models.zoo import ModelSpec, build_model

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "big",
    "small",
    "red",
    "blue",
    "house",
    "tree",
    "sees",
    "likes",
]


def sentence(i: int, n: int = 6) -> str:
    return " ".join(WORDS[(i * 3 + k * (i + 1)) % len(WORDS)] for k in range(n)) + "."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("glue2025-model")
    tokenizer = train_tokenizer([sentence(i) for i in range(200)], vocab_size=200)
    save_tokenizer(tokenizer, folder)
    torch.manual_seed(0)
    spec = ModelSpec("gpt2-g", "gpt2", 32, 1, 2, 64, paper=False)
    # The byte alphabet alone is 256 tokens, so the vocabulary outgrows the 200 asked for.
    build_model(spec, tokenizer.get_vocab_size()).save_pretrained(str(folder))
    return folder


def test_the_head_reads_position_0_or_the_last_real_token(model_dir: Path) -> None:
    body = AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [tokenizer(sentence(1))["input_ids"], tokenizer(sentence(2, 3))["input_ids"]]
    ids, mask = _batch(rows, tokenizer.pad_token_id, "right", torch.device("cpu"))
    assert mask[1].tolist() == [1] * len(rows[1]) + [0] * (len(rows[0]) - len(rows[1]))
    left_ids, left_mask = _batch(rows, tokenizer.pad_token_id, "left", torch.device("cpu"))
    assert left_ids[1, -len(rows[1]) :].tolist() == rows[1] and left_mask[1, 0] == 0
    captured = {}
    for pooling in ("first", "last"):
        model = Classifier(body, 32, 2, Glue2025Recipe(pooling=pooling)).eval()
        model.head.register_forward_hook(
            lambda m, args, out, p=pooling: captured.update({p: args[0]})
        )
        with torch.no_grad():
            model(ids, mask)
    states = body(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(captured["first"], states[:, 0])
    torch.testing.assert_close(captured["last"][1], states[1, len(rows[1]) - 1])
    layers = [type(layer).__name__ for layer in model.head]
    assert layers == ["LayerNorm", "Linear", "GELU", "LayerNorm", "Dropout", "Linear"]
    assert model.head[0].weight is None and model.head[4].p == 0.1  # no affine; dropout 0.1


def test_warm_up_then_cosine_to_a_tenth() -> None:
    assert lr_factor(0, 100, 6, 0.1) == pytest.approx(1 / 6)
    assert lr_factor(5, 100, 6, 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 100, 6, 0.1) == pytest.approx(1.0)
    assert lr_factor(53, 100, 6, 0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))
    )
    assert lr_factor(100, 100, 6, 0.1) == pytest.approx(0.1)


def test_a_tiny_2025_glue_run(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "glue_filtered"
    folder.mkdir()
    for split, count in (("train", 40), ("valid", 12)):
        lines = [
            json.dumps({"sentence1": sentence(i), "sentence2": sentence(i + 1, 4), "label": i % 2})
            for i in range(count)
        ]
        (folder / f"rte.{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = evaluate(
        model_dir,
        ["glue"],
        [folder],
        tmp_path / "out",
        device="cpu",
        epochs=2,
        glue_recipe="2025",
        glue_padding="left",
    )
    glue = result.summary["glue"]
    assert glue["recipe_name"] == "babylm-2025" and glue["padding_side"] == "left"
    rte = glue["tasks"]["rte"]
    assert (
        rte["epochs"] == 2 and rte["batch_size"] == 32 and rte["steps"] == 2
    )  # drop_last: 40 // 32
    scores = rte["valid_scores"]
    assert rte["best_epoch"] == scores.index(max(scores)) + 1  # strict >: the earliest best
    assert rte["score"] == max(scores) and 0.0 <= rte["score"] <= 1.0
    assert set(glue["missing"]) == {"boolq", "mnli", "mrpc", "multirc", "qqp", "wsc"}
    assert glue["macro"]["tasks"] == ["rte"] and not glue["macro"]["complete"]
    predictions = (tmp_path / "out" / f"{result.summary['model']['name']}.glue.jsonl").read_text()
    assert len(predictions.splitlines()) == 12
