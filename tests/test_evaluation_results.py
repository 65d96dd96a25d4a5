"""Decisions, aggregation, the prefix token and the results files (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tinyminds.errors import UserError
from tinyminds.evaluation.results import (
    ResultsWriter,
    SubtaskResult,
    TaskResult,
    decide,
    markdown_table,
    subtask_result,
)
from tinyminds.evaluation.scoring import needs_prefix, prefix_token
from tinyminds.evaluation.tasks import Pair


def test_ties_count_as_correct_and_are_counted() -> None:
    correct, ties = decide([-1.0, -2.0, -3.0, -4.5], [-2.0, -1.0, -3.0, -4.5])
    assert correct == [True, False, True, True]
    assert ties == [False, False, True, True]
    records: list[dict] = []
    result = subtask_result("blimp", "p", "p.jsonl", "ab", [-1.0, -3.0], [-2.0, -3.0], records)
    assert (result.n, result.correct, result.ties, result.accuracy) == (2, 2, 1, 1.0)
    assert records[1] == {
        "task": "blimp",
        "subtask": "p",
        "index": 1,
        "good": -3.0,
        "bad": -3.0,
        "correct": True,
        "tie": True,
    }


def test_a_task_score_is_the_unweighted_mean_of_its_subtasks() -> None:
    small = SubtaskResult("small", n=1, correct=1, ties=0, file="s", sha256="1")
    large = SubtaskResult("large", n=3, correct=1, ties=1, file="l", sha256="2")
    task = TaskResult("blimp", [small, large], None, 1.0)
    assert task.accuracy == pytest.approx((1.0 + 1 / 3) / 2)  # pooled would be 2 / 4
    assert (task.n, task.ties) == (4, 1)
    summary = task.to_json()
    assert summary["subtasks"]["large"] == {
        "accuracy": 1 / 3,
        "n": 3,
        "correct": 1,
        "ties": 1,
        "file": "l",
        "sha256": "2",
    }


def fake_tokenizer(bos: int | None, eos: int | None, pad: int | None) -> SimpleNamespace:
    return SimpleNamespace(
        bos_token_id=bos,
        bos_token="<s>",
        eos_token_id=eos,
        eos_token="</s>",
        pad_token_id=pad,
        pad_token="<pad>",
    )


def test_prefix_token_is_bos_else_eos_else_pad_else_a_clear_error() -> None:
    assert prefix_token(fake_tokenizer(1, 2, 0)).describe() == "<s> (BOS, id 1)"
    assert prefix_token(fake_tokenizer(None, 2, 0)).describe() == "</s> (EOS, id 2)"
    assert prefix_token(fake_tokenizer(None, None, 0)).describe() == "<pad> (PAD, id 0)"
    with pytest.raises(UserError, match=r"^models/x: the tokenizer has no BOS, EOS or PAD token"):
        prefix_token(fake_tokenizer(None, None, None), "models/x")
    assert needs_prefix([Pair("", "a", "b")]) and not needs_prefix([Pair("ctx", "a", "b")])


def task(name: str, accuracy_pairs: tuple[int, int]) -> TaskResult:
    correct, n = accuracy_pairs
    sub = SubtaskResult("s", n, correct, 0, "s.jsonl", "0" * 64)
    pairs = [{"task": name, "subtask": "s", "index": i, "good": 0.0, "bad": -1.0} for i in range(n)]
    return TaskResult(name, [sub], None, 2.0, pairs)


def test_results_are_written_after_each_task_and_say_what_is_pending(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "out", "m", {"model": {"name": "m"}}, ["blimp", "ewok"])
    writer.add(task("blimp", (3, 4)))
    first = json.loads(writer.json_path.read_text())
    assert first["complete"] is False and first["pending"] == ["ewok"]
    assert list(first["tasks"]) == ["blimp"] and first["model"] == {"name": "m"}
    assert len(writer.pairs_path.read_text().splitlines()) == 4
    writer.add(task("ewok", (1, 2)))
    final = json.loads(writer.json_path.read_text())
    assert (
        final["complete"] is True
        and final["pending"] == []
        and list(final["tasks"])
        == [
            "blimp",
            "ewok",
        ]
    )
    lines = [json.loads(line) for line in writer.pairs_path.read_text().splitlines()]
    assert [r["task"] for r in lines] == ["blimp"] * 4 + ["ewok"] * 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.json", "m.pairs.jsonl"]
    table = markdown_table(final)
    assert table.splitlines()[2] == "| BLiMP | 75.00 | 1 | 4 | 0 | 2.0 |"
    assert table.splitlines()[3] == "| EWoK | 50.00 | 1 | 2 | 0 | 2.0 |"
