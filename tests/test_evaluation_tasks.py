"""Reading the BabyLM evaluation data (`tinyminds.evaluation.tasks`): layouts and bad input.

No model is involved: every test writes a few JSONL lines and reads them back in milliseconds. The
EWoK-shaped lines here are invented; errors must name file, line and field, never an item's text
(EWoK's licence), which the tests check with a marker string.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import Pair, load_tasks, parse_task_names, read_subtask

SECRET = "Zanzibar-marker-text"  # stands for licensed item text: must never appear in an error


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def blimp_line(good: str = "The cat sleeps.", bad: str = "The cat sleep.") -> dict:
    return {"sentence_good": good, "sentence_bad": bad, "UID": "x", "pair_id": 0}


def ewok_line(
    context: str = "The box is red.", t1: str = "It is red.", t2: str = "It is blue."
) -> dict:
    return {"Context1": context, "Context2": "other", "Target1": t1, "Target2": t2, "Domain": "d"}


@pytest.fixture
def evaluation_data(tmp_path: Path) -> Path:
    """A miniature BabyLM 2024 evaluation_data/ folder with all three zero-shot tasks."""
    root = tmp_path / "evaluation_data"
    write_jsonl(root / "blimp_filtered" / "b_para.jsonl", [blimp_line()] * 3)
    write_jsonl(root / "blimp_filtered" / "a_para.jsonl", [blimp_line("A dog runs.", "A dog run.")])
    write_jsonl(root / "supplement_filtered" / "hypernym.jsonl", [blimp_line()] * 2)
    write_jsonl(root / "ewok_filtered" / "social-relations.jsonl", [ewok_line()] * 4)
    return root


def test_task_names_are_checked_and_listed() -> None:
    assert parse_task_names("blimp, EWOK,blimp") == ["blimp", "ewok"]
    with pytest.raises(
        UserError,
        match=r"unknown task 'cbt'; known tasks: blimp, supplement, ewok, blimp_fast, "
        r"supplement_fast, ewok_fast, entity_tracking, entity_tracking_fast, wug_adj, reading, glue$",
    ):
        parse_task_names("blimp,cbt")
    with pytest.raises(UserError, match="no task given"):
        parse_task_names(" , ")


def test_evaluation_data_layout_gives_sorted_subtasks_with_hashes(evaluation_data: Path) -> None:
    data = load_tasks(["blimp", "supplement", "ewok"], [evaluation_data])
    assert [s.name for s in data["blimp"]] == ["a_para", "b_para"]
    assert [len(s.pairs) for s in data["blimp"]] == [1, 3]
    assert data["blimp"][0].pairs[0] == Pair("", "A dog runs.", "A dog run.")
    assert data["ewok"][0].pairs[0] == Pair("The box is red.", "It is red.", "It is blue.")
    file = evaluation_data / "supplement_filtered" / "hypernym.jsonl"
    assert data["supplement"][0].sha256 == hashlib.sha256(file.read_bytes()).hexdigest()


def test_a_task_folder_or_single_files_work_for_one_task(
    evaluation_data: Path, tmp_path: Path
) -> None:
    folder = load_tasks(["blimp"], [evaluation_data / "blimp_filtered"])["blimp"]
    assert [s.name for s in folder] == ["a_para", "b_para"]
    loose = write_jsonl(tmp_path / "loose" / "my_pairs.jsonl", [blimp_line()])
    assert [s.name for s in load_tasks(["blimp"], [loose])["blimp"]] == ["my_pairs"]
    # With several tasks, files are assigned by their folder's name, else by their lines' fields.
    both = load_tasks(
        ["blimp", "ewok"],
        [evaluation_data / "blimp_filtered" / "a_para.jsonl", evaluation_data / "ewok_filtered"],
    )
    assert [s.name for s in both["blimp"]] == ["a_para"] and len(both["ewok"]) == 1
    inferred = load_tasks(["blimp", "ewok"], [loose, evaluation_data / "ewok_filtered"])
    assert [s.name for s in inferred["blimp"]] == ["my_pairs"]  # BLiMP lines carry a UID
    minimal = {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep."}
    supplement = write_jsonl(tmp_path / "loose2" / "extra.jsonl", [minimal])
    with pytest.raises(
        UserError, match=r"extra.jsonl: its lines are supplement data, which is not"
    ):
        load_tasks(["blimp", "ewok"], [evaluation_data, supplement])
    unknown = write_jsonl(tmp_path / "loose3" / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match=r"odd.jsonl: cannot tell which of blimp, ewok"):
        load_tasks(["blimp", "ewok"], [evaluation_data, unknown])


def test_missing_task_folder_empty_folder_and_missing_path(
    evaluation_data: Path, tmp_path: Path
) -> None:
    (evaluation_data / "ewok_filtered" / "social-relations.jsonl").unlink()
    with pytest.raises(UserError, match=r"ewok_filtered: empty task folder \(no .jsonl files\)"):
        load_tasks(["blimp", "ewok"], [evaluation_data])
    other = tmp_path / "other"
    write_jsonl(other / "blimp_filtered" / "p.jsonl", [blimp_line()])
    with pytest.raises(UserError, match=r"no data for task supplement in .*supplement_filtered/"):
        load_tasks(["blimp", "supplement"], [other])
    with pytest.raises(UserError, match=r"nowhere: no such file or folder"):
        load_tasks(["blimp"], [tmp_path / "nowhere"])


def test_malformed_json_names_file_and_line_but_not_the_text(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ewok_filtered" / "d.jsonl",
        [ewok_line(), "", '{"Context1": "' + SECRET + '", "Target1": oops}'],
    )
    with pytest.raises(UserError) as caught:
        read_subtask("ewok", path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: malformed JSON (Expecting value, column ")
    assert SECRET not in message and "\n" not in message


def test_missing_or_mistyped_field_names_the_field(tmp_path: Path) -> None:
    line = ewok_line(context=SECRET)
    del line["Target2"]
    path = write_jsonl(tmp_path / "d.jsonl", [ewok_line(), line])
    with pytest.raises(UserError) as caught:
        read_subtask("ewok", path)
    assert str(caught.value) == (
        f"{path}:2: missing field 'Target2' (ewok lines need Context1, Target1, Target2)"
    )
    path = write_jsonl(tmp_path / "b.jsonl", [{"sentence_good": SECRET, "sentence_bad": 3}])
    with pytest.raises(UserError, match=r"b.jsonl:1: field 'sentence_bad' is a int, expected text"):
        read_subtask("blimp", path)
    path = write_jsonl(tmp_path / "list.jsonl", ['["' + SECRET + '"]'])
    with pytest.raises(UserError, match=r"list.jsonl:1: expected a JSON object, got a list"):
        read_subtask("blimp", path)


def test_empty_file_and_non_utf8_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"empty.jsonl: no items \(an empty file\)"):
        read_subtask("blimp", empty)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(blimp_line()).encode() + b"\n" + b'{"sentence_good": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"latin1.jsonl:2: not UTF-8 text"):
        read_subtask("blimp", bad)


def test_two_files_with_the_same_subtask_name_are_refused(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a" / "blimp_filtered" / "same.jsonl", [blimp_line()])
    b = write_jsonl(tmp_path / "b" / "blimp_filtered" / "same.jsonl", [blimp_line()])
    with pytest.raises(UserError, match=r"subtask 'same' given twice"):
        load_tasks(["blimp"], [a, b])
