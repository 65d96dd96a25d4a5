"""Where the demo finds its evaluation data, and the note it prints where there is none.

The demo itself (with real evaluation data) runs in test_readme.py; this checks the search and the
no-data path without training anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyminds.demo import EVAL_DATA_ENV, find_eval_data, no_eval_data_note
from tinyminds.errors import UserError


def make_task(root: Path, folder: str) -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "sub.jsonl").write_text("{}\n", encoding="utf-8")
    return root


def test_explicit_folder_first(tmp_path: Path) -> None:
    explicit = make_task(make_task(tmp_path / "mine", "ewok_filtered"), "blimp_filtered")
    make_task(tmp_path / "env", "supplement_filtered")
    found = find_eval_data(tmp_path / "out", explicit, {EVAL_DATA_ENV: str(tmp_path / "env")})
    assert found.folder == explicit and found.tasks == ["blimp", "ewok"]
    # A task folder itself is data too.
    found = find_eval_data(tmp_path / "out", explicit / "ewok_filtered", {})
    assert found.tasks == ["ewok"]


def test_a_bad_explicit_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--eval-data .*absent: no such folder"):
        find_eval_data(tmp_path, tmp_path / "absent", {})
    (tmp_path / "empty" / "blimp_filtered").mkdir(parents=True)  # a task folder without files
    with pytest.raises(UserError, match=r"empty holds none of blimp_filtered/, supplement"):
        find_eval_data(tmp_path, tmp_path / "empty", {})


def test_environment_then_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_task(tmp_path / "env", "supplement_filtered")
    found = find_eval_data(out, None, {EVAL_DATA_ENV: str(tmp_path / "env")})
    assert found.folder == tmp_path / "env" and found.tasks == ["supplement"]
    make_task(out / "evaluation_data", "blimp_filtered")
    found = find_eval_data(out, None, {EVAL_DATA_ENV: str(tmp_path / "missing")})
    assert found.folder == out / "evaluation_data" and found.tasks == ["blimp"]
    assert found.looked == [f"${EVAL_DATA_ENV}={tmp_path / 'missing'} (no such folder)"]


def test_no_data_gives_the_note(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "evaluation_data" / "glue_filtered").mkdir(parents=True)  # GLUE alone: no zero-shot
    found = find_eval_data(out, None, {})
    assert found.folder is None and found.tasks == []
    note = no_eval_data_note(found, out)
    assert "\n" not in note and note.startswith("No evaluation data, so the demo skipped")
    assert f"${EVAL_DATA_ENV} (not set)" in note
    assert f"{out / 'evaluation_data'} (none of blimp_filtered/" in note
    assert "https://osf.io/ad7qg/" in note and "BabyLM 2024 evaluation data" in note
    for folder in ("blimp_filtered/", "supplement_filtered/", "ewok_filtered/", "glue_filtered/"):
        assert folder in note
    assert f"tinyminds demo --out {out} --eval-data DIR" in note
