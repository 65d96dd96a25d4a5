"""GLUE without a model: metrics against hand-computed values, the paper's macro average, reading
every task's format, finding the folder, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tinyminds.cli import main
from tinyminds.errors import UserError
from tinyminds.evaluation.glue_tasks import (
    GLUE_TASKS,
    MACRO_TASKS,
    accuracy,
    f1,
    load_glue,
    macro_average,
    majority_label,
    mcc,
    read_glue_file,
    score,
)
from tinyminds.evaluation.results import glue_markdown_table
from tinyminds.evaluation.tasks import load_tasks, parse_task_names

# One line of each task, with the field names of BabyLM's glue_filtered/ files.
LINES = {
    "boolq": {"question": "is it red", "passage": "It is red.", "idx": 3, "label": 1},
    "cola": {"sentence": "The dog runs.", "label": 1, "idx": 0},
    "mnli": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0, "idx": 7},
    "mnli-mm": {"premise": "A cat sits.", "hypothesis": "No cat.", "label": 2, "idx": 8},
    "mrpc": {"sentence1": "He left.", "sentence2": "He went away.", "label": 1, "idx": 1},
    "multirc": {
        "paragraph": "Ann had a red ball.",
        "question": "What did Ann have?",
        "answer": "A ball",
        "idx": {"paragraph": 0, "question": 0, "answer": 1},
        "label": 1,
    },
    "qnli": {"question": "Who ran?", "sentence": "Bo ran.", "label": 0, "idx": 5},
    "qqp": {"question1": "How to run?", "question2": "How do I run?", "label": 1, "idx": 2},
    "rte": {"sentence1": "Bo ran home.", "sentence2": "Bo ran.", "label": 0, "idx": 4},
    "sst2": {"sentence": "a fine film . ", "label": 1, "idx": 6},
    "wsc": {
        "text": "Mark told Pete a lie. He was sorry.",
        "span1_index": 0,
        "span2_index": 6,
        "span1_text": "Mark",
        "span2_text": "He",
        "idx": 0,
        "label": 1,
    },
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- metrics ---------------------------------------------------------------------------------------


def test_accuracy_f1_and_mcc_against_hand_computed_values() -> None:
    labels = [1, 1, 1, 0, 0, 1, 0, 1]
    predictions = [1, 0, 1, 0, 1, 1, 0, 0]
    # TP 3, FN 2, FP 1, TN 2.
    assert accuracy(labels, predictions) == 5 / 8
    assert f1(labels, predictions) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert mcc(labels, predictions) == pytest.approx((3 * 2 - 1 * 2) / math.sqrt(4 * 5 * 3 * 4))
    assert mcc(labels, labels) == pytest.approx(1.0)
    assert mcc(labels, [1 - p for p in labels]) == pytest.approx(-1.0)
    # A constant predictor: MCC undefined, reported as 0; F1 0 without any positive prediction.
    assert mcc(labels, [1] * 8) == 0.0
    assert f1(labels, [0] * 8) == 0.0
    assert f1(labels, [1] * 8) == pytest.approx(2 * 5 / (2 * 5 + 3))


def test_mcc_with_three_classes_matches_the_confusion_matrix_formula() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    # c = 4 correct of s = 6; true counts 2,2,2; predicted counts 2,3,1.
    expected = (4 * 6 - (2 * 2 + 2 * 3 + 2 * 1)) / math.sqrt((36 - (4 + 9 + 1)) * (36 - 12))
    assert mcc(labels, predictions) == pytest.approx(expected)


def test_each_task_uses_its_metric_and_multirc_counts_answer_options() -> None:
    assert {t: s.metric for t, s in GLUE_TASKS.items() if s.metric != "accuracy"} == {
        "cola": "mcc",
        "mrpc": "f1",
        "qqp": "f1",
    }
    labels, predictions = [1, 0, 0, 1], [1, 1, 0, 0]
    assert score("cola", labels, predictions) == mcc(labels, predictions) == 0.0
    assert score("qqp", labels, predictions) == 0.5
    # MultiRC: one line per answer option, so the accuracy is per answer option.
    assert score("multirc", [1, 0, 0, 1, 1], [1, 0, 1, 1, 0]) == 3 / 5


def test_majority_label_prefers_the_most_frequent_then_the_smallest() -> None:
    assert majority_label([2, 1, 2, 0]) == 2
    assert majority_label([1, 0, 0, 1]) == 0


def test_macro_average_matches_the_papers_published_numbers() -> None:
    # Paper Table 4 (SPEC §4), DistilledGPT and BabyLlama-58M: macro 68.8 and 68.9.
    distilled = dict(
        mrpc=80.9, rte=55.4, multirc=64.9, qqp=75.1, qnli=77.4, wsc=57.7, mnli=66.9, sst2=75.9
    )
    distilled["boolq"] = 65.3
    babyllama = dict(
        mrpc=82.0, rte=49.6, multirc=60.1, qqp=83.6, qnli=82.8, wsc=38.5, mnli=72.4, sst2=86.2
    )
    babyllama["boolq"] = 65.0
    assert sorted(MACRO_TASKS) == sorted(distilled)
    for scores, published in ((distilled, 68.8), (babyllama, 68.9)):
        macro = macro_average({**scores, "cola": -0.01, "mnli-mm": 0.0})  # both left out
        assert round(macro["score"], 1) == published
        assert macro["complete"] and macro["covered"] == macro["of"] == 9
    # With CoLA instead of one of them the published numbers are not reproduced.
    with_cola = [*distilled.values(), -0.01]
    assert round(sum(with_cola) / len(with_cola), 1) != 68.8


def test_an_incomplete_macro_average_says_what_it_covers() -> None:
    macro = macro_average({"rte": 0.5, "wsc": 0.7, "cola": 0.1})
    assert macro == {
        "score": pytest.approx(0.6),
        "tasks": ["rte", "wsc"],
        "covered": 2,
        "of": 9,
        "complete": False,
    }
    assert macro_average({})["score"] is None


# --- reading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(LINES))
def test_every_task_format_is_read_as_the_babylm_scripts_read_it(tmp_path: Path, task: str) -> None:
    path = write_jsonl(tmp_path / f"{task}.valid.jsonl", [LINES[task], LINES[task]])
    read = read_glue_file(task, path)
    assert len(read.examples) == 2 and read.labels == [LINES[task]["label"]] * 2
    example = read.examples[0]
    expected = {
        "boolq": ("is it red", "It is red."),
        "cola": ("The dog runs.", None),
        "mnli": ("A dog runs.", "An animal moves."),
        "mnli-mm": ("A cat sits.", "No cat."),
        "mrpc": ("He left.", "He went away."),
        "multirc": ("Question: What did Ann have? Answer: A ball", "Ann had a red ball."),
        "qnli": ("Who ran?", "Bo ran."),
        "qqp": ("How to run?", "How do I run?"),
        "rte": ("Bo ran home.", "Bo ran."),
        "sst2": ("a fine film . ", None),
        "wsc": (
            'Does "He" refer to "Mark" in this passage?',
            "Mark told Pete a lie. He was sorry.",
        ),
    }
    assert (example.first, example.second) == expected[task]


def test_braces_in_the_text_are_kept_as_they_are(tmp_path: Path) -> None:
    line = {**LINES["multirc"], "answer": "{x} and {}"}
    read = read_glue_file("multirc", write_jsonl(tmp_path / "multirc.valid.jsonl", [line]))
    assert read.examples[0].first == "Question: What did Ann have? Answer: {x} and {}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"sentence": "ok", "label": 1}\n{"sentence": "bad", "label": 1\n', r":2: malformed JSON"),
        ('{"label": 1}\n', r":1: missing field 'sentence' \(cola lines need sentence, label\)"),
        ('{"sentence": "ok"}\n', r":1: missing field 'label'"),
        ('{"sentence": "ok", "label": 2}\n', r":1: unknown label 2 \(cola labels are 0, 1\)"),
        ('{"sentence": "ok", "label": "1"}\n', r":1: unknown label '1'"),
        ('{"sentence": "ok", "label": true}\n', r":1: unknown label True"),
        ('{"sentence": 3, "label": 1}\n', r":1: field 'sentence' is a int, expected text"),
        ("[1, 2]\n", r":1: expected a JSON object, got a list"),
        ("\n\n", r"no examples \(an empty file\)"),
    ],
)
def test_bad_lines_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "cola.train.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as error:
        read_glue_file("cola", path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "bad" not in message.removeprefix(str(path))  # the line's text is never repeated


def test_mnli_has_three_labels(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mnli.train.jsonl", [{**LINES["mnli"], "label": 2}])
    assert read_glue_file("mnli", path).labels == [2]
    path = write_jsonl(tmp_path / "rte.train.jsonl", [{**LINES["rte"], "label": 2}])
    with pytest.raises(
        UserError, match=r"rte.train.jsonl:1: unknown label 2 \(rte labels are 0, 1\)"
    ):
        read_glue_file("rte", path)


def glue_folder(root: Path, train: list[str], valid: list[str]) -> Path:
    for task in train:
        write_jsonl(root / "glue_filtered" / f"{task}.train.jsonl", [LINES[task]] * 3)
    for task in valid:
        write_jsonl(root / "glue_filtered" / f"{task}.valid.jsonl", [LINES[task]] * 2)
    return root


def test_tasks_without_a_training_file_are_missing_with_the_reason(tmp_path: Path) -> None:
    root = glue_folder(tmp_path / "evaluation_data", ["rte", "cola"], list(GLUE_TASKS))
    data = load_glue([root])
    assert data.folder == root / "glue_filtered"
    missing = {task: data.missing(task) for task in GLUE_TASKS if data.missing(task)}
    assert missing == {
        "boolq": "no training file",
        "mnli": "no training file",
        "mnli-mm": "no training file for mnli, whose model evaluates it",
        "mrpc": "no training file",
        "multirc": "no training file",
        "qnli": "no training file",
        "qqp": "no training file",
        "sst2": "no training file",
        "wsc": "no training file",
    }
    # mnli-mm needs no training file of its own; a missing valid file is named too.
    root = glue_folder(tmp_path / "other", ["mnli", "rte"], ["mnli", "mnli-mm"])
    data = load_glue([root / "glue_filtered"], only_task=True)
    assert data.missing("mnli") is None and data.missing("mnli-mm") is None
    assert data.missing("rte") == "no valid file"


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "glue_filtered").mkdir()
    with pytest.raises(UserError, match=r"glue_filtered: empty task folder \(no .jsonl files\)"):
        load_glue([tmp_path])
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(UserError, match=r"no data for task glue in .*elsewhere: expected a folder"):
        load_glue([other])
    bad = glue_folder(tmp_path / "bad", [], ["rte"])
    (bad / "glue_filtered" / "rte.valid.jsonl").write_text('{"sentence1": "x"}\n')
    with pytest.raises(UserError, match=r"rte.valid.jsonl:1: missing field 'sentence2'"):
        load_glue([bad])


def test_glue_is_a_known_task_and_overrides_need_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_task_names("blimp, GLUE") == ["blimp", "glue"]
    with pytest.raises(
        UserError, match=r"known tasks: blimp, supplement, ewok, blimp_fast, .*, reading, glue$"
    ):
        parse_task_names("superglue")
    model = tmp_path / "model"  # passes the cheap folder check; nothing is loaded before the error
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    root = glue_folder(tmp_path / "evaluation_data", ["rte"], ["rte"])
    command = ["evaluate", str(model), "--data", str(root)]
    assert main([*command, "--tasks", "blimp", "--epochs", "2"]) == 2
    assert capsys.readouterr().err == (
        "tinyminds evaluate: error: --epochs applies to GLUE fine-tuning only; add glue to --tasks\n"
    )
    assert main([*command, "--tasks", "glue", "--max-train-examples", "0"]) == 2
    assert "--max-train-examples must be at least 1, got 0" in capsys.readouterr().err


def test_glue_table_shows_baselines_missing_tasks_and_the_macro_coverage() -> None:
    glue = {
        "macro": {"score": 0.6, "tasks": ["rte"], "covered": 1, "of": 9, "complete": False},
        "tasks": {
            "boolq": {
                "metric": "accuracy",
                "baseline": 0.62,
                "baseline_from": "valid",
                "missing": "no training file",
            },
            "cola": {
                "metric": "mcc",
                "baseline": 0.0,
                "baseline_from": "train",
                "score": 0.031,
                "train_examples": 64,
                "train_file_examples": 8551,
                "best_epoch": 2,
                "epochs": 2,
                "seconds": 1.25,
            },
            "rte": {"metric": "accuracy", "baseline": 0.5, "baseline_from": "train", "score": 0.6}
            | {"train_examples": 64, "train_file_examples": 2490, "best_epoch": 1, "epochs": 2}
            | {"seconds": 2.0},
            "wsc": {"metric": "accuracy", "baseline": 0.615, "baseline_from": "train"},
        },
    }
    glue["macro"]["baseline"] = 0.5
    table = glue_markdown_table(glue)
    assert "| BoolQ | accuracy | missing: no training file | 62.00 (valid labels) |" in table
    assert "| CoLA | MCC | 3.10 | 0.00 | 64 of 8,551 | 2 of 2 | 1.2 |" in table
    assert "| WSC | accuracy | pending | 61.50 |" in table
    assert "| macro average over 1 of 9 tasks only (rte) | | 60.00 | 50.00 |" in table


def test_glue_beside_zero_shot_tasks_given_as_separate_folders(tmp_path: Path) -> None:
    root = glue_folder(tmp_path / "evaluation_data", ["rte"], ["rte"])
    pair = {"sentence_good": "The dog runs.", "sentence_bad": "The dog run."}
    write_jsonl(root / "blimp_filtered" / "agreement.jsonl", [pair])
    paths = [root / "blimp_filtered", root / "glue_filtered"]
    loaded = load_tasks(["blimp", "glue"], paths)  # the GLUE folder is not read as BLiMP
    assert list(loaded) == ["blimp"] and [s.name for s in loaded["blimp"]] == ["agreement"]
    assert load_glue(paths).folder == root / "glue_filtered"
    stray = tmp_path / "stray"
    stray.mkdir()
    with pytest.raises(UserError, match=r"stray: cannot tell which of blimp, glue it belongs to"):
        load_tasks(["blimp", "glue"], [*paths, stray])
