"""The BabyLM 2025 tasks (entity tracking, WUG, reading) against slow references on a tiny random
model, the reading regressions on synthetic tables with known answers, bad input, and the whole
fast suite on the real archives (skipped where ../shared/data is absent).

Every item here is written by the test; the real archives are extracted into temporary folders and
nothing of them is printed (entity tracking and EWoK must never appear as plain text)."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_archive
from scipy.stats import linregress, spearmanr
from transformers import AutoTokenizer, PreTrainedModel

from tinyminds.cli import main
from tinyminds.data.tokenizer import save_tokenizer, train_tokenizer
from tinyminds.errors import UserError
from tinyminds.evaluation.babylm2025 import (
    READING_COLUMNS,
    r2,
    r2_improvement,
    read_entity_tracking,
    read_reading,
    read_wug,
    score_entity_tracking,
    score_reading,
    score_wug,
    word_requests,
)
from tinyminds.models.zoo import ModelSpec, build_model

VOCAB = 300
WORDS = [
    "the",
    "a",
    "box",
    "cat",
    "dog",
    "key",
    "ball",
    "red",
    "blue",
    "big",
    "small",
    "is",
    "in",
    "on",
    "has",
    "moved",
    "contains",
    "nothing",
]


def text(seed: int, n: int) -> str:
    return " ".join(WORDS[(seed * 5 + i * (seed + 2)) % len(WORDS)] for i in range(n))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tok2025")
    lines = [text(i, 4 + i % 9) + "." for i in range(300)]
    save_tokenizer(train_tokenizer(lines, vocab_size=VOCAB), folder)
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def model() -> PreTrainedModel:
    torch.manual_seed(0)
    model = build_model(ModelSpec("gpt2-t", "gpt2", 32, 2, 2, 64, paper=False), VOCAB)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    return model.eval()


def log_probs(model: PreTrainedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float().log_softmax(-1)[0]


def reference_candidate(model, tokenizer, sentence: str, completion: str) -> float:
    """SPEC-2025 §1, one candidate at a time (offsets, shift, mask, sum)."""
    encoding = tokenizer(sentence, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    start = len(sentence) - len(completion)
    scores = log_probs(model, ids)
    return sum(
        float(scores[k - 1, ids[k]])
        for k in range(1, len(ids))
        if offsets[k][1] > start and offsets[k] != (0, 0)
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_entity_tracking_scores_decisions_and_aggregation(model, tokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "entity_tracking"
    for split, offset in (("regular", 0), ("ambiref", 50)):
        records = [
            {
                "sample_id": i,
                "numops": i % 3,
                "input_prefix": f"{text(offset + i, 6)}. The box contains ",
                "options": [text(offset + i + j, 2 + j % 2) for j in range(5)],
                "example_id": i,
            }
            for i in range(9)
        ]
        # Every option the same: an exact tie for the first maximum, counted correct.
        records[0]["options"] = [records[0]["options"][0]] * 5
        write_jsonl(folder / f"{split}.jsonl", records)
    files = read_entity_tracking("entity_tracking", [tmp_path], only_task=True)
    result = score_entity_tracking("entity_tracking", files, model, tokenizer, 4, None)
    per_uid: dict[str, list[bool]] = {}
    for f in files:
        for i, candidates in enumerate(f.candidates):
            reference = [reference_candidate(model, tokenizer, s, c) for s, c in candidates]
            record = next(
                r for r in result.pairs if r["subtask"].startswith(f.split) and r["index"] == i
            )
            assert record["scores"] == pytest.approx(reference, abs=1e-4, rel=0)
            correct = reference[0] >= max(reference[1:])
            assert record["correct"] == correct
            per_uid.setdefault(f"{f.split}_{f.numops[i]}_ops", []).append(correct)
    assert result.pairs[0]["tie"] and result.pairs[0]["correct"]
    accuracy = {uid: sum(v) / len(v) for uid, v in per_uid.items()}
    assert {u: s["accuracy"] for u, s in result.details["subtasks"].items()} == accuracy
    split_means = [
        np.mean([a for u, a in accuracy.items() if u.startswith(split)])
        for split in ("regular", "ambiref")
    ]
    assert result.score == pytest.approx(np.mean(split_means))
    assert result.metric == "accuracy" and result.n == 18


def test_wug_is_spearman_of_the_ity_probability(model, tokenizer, tmp_path: Path) -> None:
    records = [
        {"sentences": f"{text(i, 5)} ity.\t{text(i, 5)} ness.", "ratio": (i * 37 % 11) / 10}
        for i in range(12)
    ]
    write_jsonl(tmp_path / "wug_adj_nominalization" / "wug.jsonl", records)
    items = read_wug("wug_adj", [tmp_path], only_task=True)
    result = score_wug("wug_adj", items, model, tokenizer, 4, None)
    q = []
    for ity, ness in items.sentences:
        a = reference_candidate(model, tokenizer, ity, ity)
        b = reference_candidate(model, tokenizer, ness, ness)
        q.append(1.0 / (1.0 + math.exp(b - a)))
    assert [r["q"] for r in result.pairs] == pytest.approx(q, abs=1e-6)
    assert result.score == pytest.approx(spearmanr(q, items.ratios).statistic, abs=1e-9)
    assert result.metric == "spearman_rho"


def test_word_probability_follows_the_pipeline_rule(model, tokenizer) -> None:
    context, word = "the red box is in", "nothing."
    targets = tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(targets) >= 2  # the premise: a word of several tokens
    requests = word_requests(tokenizer, context, word)
    assert requests[0] == (tokenizer(context)["input_ids"], [targets[0]])
    # From the second token on: the context string grows by the previous token's text.
    grown = context + tokenizer.decode([targets[0]])
    assert requests[1] == (tokenizer(grown)["input_ids"], [targets[1]])
    expected = sum(float(log_probs(model, ctx)[-1, cont[0]]) for ctx, cont in requests)
    from tinyminds.evaluation.babylm2025 import surprisals

    assert surprisals(tokenizer, model, [(context, word)], 8) == pytest.approx(
        [-expected], abs=1e-4
    )


def test_r2_improvement_known_answers_and_an_independent_fit() -> None:
    rng = np.random.default_rng(0)
    f, length, c = rng.normal(size=(3, 200))
    base = [f, length, c, f * length, f * c, length * c]
    pred = rng.normal(size=200)
    exact = 1.0 + 2 * f - length + 0.5 * c + 0.3 * f * c + pred  # the baseline + pred explain all
    assert r2_improvement(base, pred, exact) == pytest.approx(1.0, abs=1e-9)
    noisy = 1.0 + 2 * f + rng.normal(size=200)
    assert r2_improvement(base, f.copy(), noisy) == pytest.approx(0.0, abs=1e-9)  # nothing new
    # Plain R^2 with an intercept: one regressor's against scipy's linregress.
    y = 3 * pred + rng.normal(size=200)
    design = np.column_stack([np.ones(200), pred])
    assert r2(design, y) == pytest.approx(linregress(pred, y).rvalue ** 2, abs=1e-12)


def test_reading_table_scores_and_missing_values(model, tokenizer, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    header = ["", *READING_COLUMNS]
    lines = [",".join(header)]
    for i in range(40):
        item = "None" if i == 0 else text(i, 1 + i % 6)  # "None" is restored as the text "None"
        row = {
            "item": item,
            "word": WORDS[i % len(WORDS)],
            "context_length": str(1 + i % 6),
            "Subtlex_log10": "" if i == 5 else f"{rng.normal():.3f}",  # missing: row dropped
            "length": str(len(WORDS[i % len(WORDS)])),
            **{m: f"{200 + 50 * rng.normal():.1f}" for m in READING_COLUMNS[5:9]},
            "self_paced_reading_time": f"{300 + 40 * rng.normal():.1f}",
            "prev_word": WORDS[(i + 3) % len(WORDS)],
            "prev_item": "None" if i == 7 else text(i + 1, 2),  # missing for pandas: no spill-over
            "prev_length": "3",
        }
        lines.append(",".join([str(i), *(row[c] for c in READING_COLUMNS)]))
    folder = tmp_path / "reading"
    folder.mkdir()
    (folder / "reading_data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_reading("reading", [tmp_path], only_task=True)
    assert table.rows[0]["item"] == "None" and table.rows[7]["prev_item"] is None
    result = score_reading("reading", table, model, tokenizer, 8)
    assert result.details["eye_tracking_rows"] == dict.fromkeys(READING_COLUMNS[5:9], 39)
    assert result.details["self_paced_reading_rows"] == 38  # also without row 7's spill-over
    assert math.isnan(result.pairs[7]["previous_surprisal"])
    measures = result.details["eye_tracking_measures"]
    assert result.score == pytest.approx(sum(measures.values()) / 4)
    assert all(-1.0 <= v <= 1.0 for v in [*measures.values(), result.details["self_paced_reading"]])


def test_bad_2025_input_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "reading"
    folder.mkdir()
    (folder / "reading_data.csv").write_text("item,word\nthe,cat\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"reading_data.csv: no column 'context_length'"):
        read_reading("reading", [tmp_path], only_task=True)
    bad = tmp_path / "entity_tracking" / "regular.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"input_prefix": "x", "options": ["a", "b"], "numops": 1}\n{not json\n')
    with pytest.raises(UserError, match=r"regular.jsonl:2: malformed JSON") as error:
        read_entity_tracking("entity_tracking", [tmp_path], only_task=True)
    assert "not json" not in str(error.value)  # never the item's text


def test_the_fast_suite_on_the_real_archives(tmp_path: Path, capsys) -> None:
    """`--suite babylm-2025-fast` end to end on a tiny random model: every task's real file
    parses with the counts SPEC-2025 gives, and the results name their convention."""
    archives = ["blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking", "wug", "reading"]
    data = tmp_path / "evaluation_data"
    for name in archives:
        with tarfile.open(shared_archive(f"{name}.tar.gz")) as tar:
            tar.extractall(data, filter="data")
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    lines = [text(i, 4 + i % 9) + "." for i in range(300)]
    save_tokenizer(train_tokenizer(lines, vocab_size=VOCAB), model_dir)
    build_model(ModelSpec("gpt2-t", "gpt2", 32, 1, 2, 64, paper=False), VOCAB).save_pretrained(
        str(model_dir)
    )
    out = tmp_path / "results"
    command = ["evaluate", str(model_dir), "--suite", "babylm-2025-fast", "--data", str(data)]
    assert main([*command, "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    document = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert document["convention"] == "2025" and document["complete"]
    tasks = document["tasks"]
    counts = {task: entry["n"] for task, entry in tasks.items()}
    assert counts == {
        "blimp_fast": 13_400,
        "supplement_fast": 250,
        "ewok_fast": 1_100,
        "entity_tracking_fast": 3_152,
        "wug_adj": 200,
        "reading": 1_726,
    }
    assert tasks["blimp_fast"]["ties"] >= 3  # the three identical pairs at least
    assert tasks["entity_tracking_fast"]["subtask_count"] == 6  # numops 0-5
    assert set(tasks["reading"]["eye_tracking_rows"].values()) == {1_696}
    assert tasks["reading"]["self_paced_reading_rows"] == 1_496
    printed = capsys.readouterr().out
    assert "Spearman rho" in printed and "self-paced reading" in printed


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer, model) -> Path:
    folder = tmp_path_factory.mktemp("model2025")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_a_folder_of_task_files_just_works(model_dir: Path, tmp_path: Path, capsys) -> None:
    """The original, unfiltered BLiMP layout: a folder named after nothing we know."""
    pairs = [
        {"sentence_good": f"{text(i, 5)}.", "sentence_bad": f"{text(i + 1, 5)}.", "UID": "toy"}
        for i in range(6)
    ]
    for name in ("blimp_unfiltered", "blimp"):
        data = write_jsonl(tmp_path / name / "toy.jsonl", pairs).parent
        out = tmp_path / f"out-{name}"
        assert main(["evaluate", str(model_dir), "--data", str(data), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "skipped, no data given: supplement, ewok" in printed
        document = json.loads(next(out.glob("*.json")).read_text(encoding="utf-8"))
        assert list(document["tasks"]) == ["blimp"] and document["complete"]
        assert document["skipped"] == ["supplement", "ewok"]
    # Lines of another task than the ones asked for, and lines of no known task: one line each.
    ewok = write_jsonl(
        tmp_path / "mystery" / "a.jsonl", [{"Context1": "a", "Target1": "b", "Target2": "c"}]
    ).parent
    command = ["evaluate", str(model_dir), "--tasks", "blimp,supplement", "--data", str(ewok)]
    assert main(command) == 2
    assert "its lines are ewok data" in capsys.readouterr().err
    unknown = write_jsonl(tmp_path / "other" / "a.jsonl", [{"x": 1}]).parent
    assert main(["evaluate", str(model_dir), "--data", str(unknown)]) == 2
    assert "no data for any of blimp, supplement, ewok" in capsys.readouterr().err
    command = ["evaluate", str(model_dir), "--tasks", "blimp,ewok", "--data", str(unknown)]
    assert main(command) == 2
    assert "cannot tell which of blimp, ewok it belongs to" in capsys.readouterr().err


def test_2025_only_tasks_refuse_the_2024_convention(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    command = ["evaluate", str(model_dir), "--tasks", "wug_adj", "--data", str(tmp_path)]
    assert main([*command, "--convention", "2024"]) == 2
    assert "exist only in the BabyLM 2025 pipeline" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                str(model_dir),
                "--suite",
                "babylm-2025",
                "--tasks",
                "blimp",
                "--data",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "give --suite or --tasks, not both" in capsys.readouterr().err
    command = ["evaluate", str(model_dir), "--tasks", "blimp", "--data", str(tmp_path)]
    assert main([*command, "--temperature-sweep", "1,2,0.5"]) == 2
    assert "--temperature-sweep is the BabyLM 2025 pipeline's" in capsys.readouterr().err
    assert main([*command, "--convention", "2025", "--temperature-sweep", "1,x"]) == 2
    assert "expected MIN,MAX,STEP numbers" in capsys.readouterr().err


def test_the_temperature_sweep_is_reported_apart(model_dir: Path, tmp_path: Path, capsys) -> None:
    pairs = [
        {"sentence_good": f"{text(i, 4)}.", "sentence_bad": f"{text(i + 2, 4)}."} for i in range(8)
    ]
    data = write_jsonl(tmp_path / "blimp_fast" / "toy.jsonl", pairs).parent
    out = tmp_path / "out"
    command = ["evaluate", str(model_dir), "--tasks", "blimp_fast", "--data", str(data)]
    assert (
        main(
            [
                *command,
                "--convention",
                "2025",
                "--temperature-sweep",
                "0.5,2,0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    document = json.loads(next(out.glob("*.json")).read_text(encoding="utf-8"))
    sweep = document["tasks"]["blimp_fast"]["temperature_sweep"]
    assert sweep["temperatures"] == [0.5, 1.0, 1.5, 2.0] and len(sweep["scores"]) == 4
    assert sweep["scores"][1] == document["tasks"]["blimp_fast"]["accuracy"]  # T = 1 in the sweep
    assert "temperature sweep (reported apart" in printed
