"""Word-milestone checkpoints (names, words seen, resume) and `tinyminds trajectory` on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import InterruptAfter
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tinyminds.cli import main
from tinyminds.config import from_dict
from tinyminds.errors import UserError
from tinyminds.files import folder_lock
from tinyminds.training.config import TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.milestones import (
    BABYLM_2025_MILLIONS,
    milestone_name,
    milestone_words,
    saved_milestones,
)

pytestmark = pytest.mark.slow

SETTINGS = {
    "model": "gpt2-tiny",
    "batch_size": 32,
    "epochs": 1,
    "lr": 3e-3,
    "eval_chunks": 64,
    "checkpoint_every": 10,
    "log_every": 5,
    "seed": 5,
    "milestones": "custom",
    "milestone_words": [0.02, 0.05, 0.08],  # one epoch reads ~92k words
}
MILESTONES = ["chck_0.02M", "chck_0.05M", "chck_0.08M"]


def make_config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, "data": str(data), "out": str(out)})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def milestone_run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("milestones") / "run"
    result = train(make_config(prepared_data, out))
    assert result.milestones == MILESTONES
    return out


def test_the_2025_schedule_and_its_names() -> None:
    words = milestone_words("babylm-2025", [])
    assert [milestone_name(w) for w in words[:3]] == ["chck_1M", "chck_2M", "chck_3M"]
    assert [milestone_name(w) for w in words[8:11]] == ["chck_9M", "chck_10M", "chck_20M"]
    assert milestone_name(words[-1]) == "chck_100M" and len(words) == len(BABYLM_2025_MILLIONS)
    assert milestone_words("custom", [2, 0.5, 2]) == [500_000, 2_000_000]
    assert milestone_words("none", []) == []


def test_milestone_settings_are_checked() -> None:
    with pytest.raises(UserError, match="milestones=custom needs milestone_words"):
        TrainConfig(model="gpt2-tiny", milestones="custom")
    with pytest.raises(UserError, match="milestone_words is used with milestones=custom"):
        TrainConfig(model="gpt2-tiny", milestone_words=[1.0])
    with pytest.raises(UserError, match="milestone_words"):
        from_dict(
            TrainConfig,
            {"model": "gpt2-tiny", "milestones": "custom", "milestone_words": "1,-2"},
            "the command line",
        )


def test_milestones_are_saved_when_their_words_are_reached(
    milestone_run: Path, prepared_data: Path
) -> None:
    manifest = json.loads((prepared_data / "manifest.json").read_text())
    train_split = manifest["splits"]["train"]
    words_per_step = 32 * 128 * train_split["words"] / train_split["tokens"]
    found = saved_milestones(milestone_run)
    assert [m.name for m in found] == MILESTONES
    for milestone in found:
        info = json.loads((milestone.folder / "tinyminds.json").read_text())
        assert info["milestone_words"] == milestone.milestone_words
        # The first step at or past the milestone: at most one step's words beyond it.
        assert (
            milestone.milestone_words
            <= milestone.words_seen
            < milestone.milestone_words + (words_per_step + 1)
        )
        assert info["words_seen"] == milestone.words_seen
        assert info["step"] == round(milestone.words_seen / words_per_step)
        assert info["validation"] is None  # saved between validations
        AutoModelForCausalLM.from_pretrained(str(milestone.folder))  # a loadable HF folder
    # Distinct weights: each is the model of its own step.
    first, last = (load_file(str(m.folder / "model.safetensors")) for m in (found[0], found[-1]))
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_a_resumed_run_saves_the_same_milestones(
    milestone_run: Path, prepared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):  # after the first milestone, before the others
        train(make_config(prepared_data, out), objective=InterruptAfter(15))
    assert [m.name for m in saved_milestones(out)] == MILESTONES[:1]
    result = train(make_config(prepared_data, out), resume=True)
    assert result.milestones == MILESTONES
    for ours, reference in zip(saved_milestones(out), saved_milestones(milestone_run), strict=True):
        assert ours.words_seen == reference.words_seen
        a = load_file(str(ours.folder / "model.safetensors"))
        b = load_file(str(reference.folder / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), ours.name


def _pairs(folder: Path, name: str, count: int, uid: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        record = {"sentence_good": f"the king is {i} .", "sentence_bad": f"the king are {i} ."}
        if uid:
            record["UID"] = "agreement"
        lines.append(json.dumps(record))
    (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_trajectory_scores_every_checkpoint_once_and_draws_it(
    milestone_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "evaluation_data"
    _pairs(data / "blimp_fast", "agreement", 12, uid=True)
    _pairs(data / "supplement_fast", "hypernym", 6, uid=False)
    out = tmp_path / "trajectory"
    command = ["trajectory", str(milestone_run), "--data", str(data), "--out", str(out)]
    assert main(command) == 0
    assert "| chck_0.08M |" in capsys.readouterr().out  # the table
    record = json.loads((out / "trajectory.json").read_text())
    assert record["convention"] == "2025" and record["tasks"] == ["blimp_fast", "supplement_fast"]
    assert record["skipped"] == ["ewok_fast", "entity_tracking_fast", "wug_adj", "reading"]
    rows = record["checkpoints"]
    assert [row["name"] for row in rows] == MILESTONES
    for row in rows:
        results = json.loads((out / f"{row['name']}.json").read_text())
        assert (
            results["convention"] == "2025"
            and results["model"]["words_seen"] == (row["words_seen"])
        )
        assert row["scores"]["blimp_fast"] == pytest.approx(
            100 * results["tasks"]["blimp_fast"]["accuracy"]
        )
    table = (out / "trajectory.md").read_text()
    assert table.count("| chck_") == 3 and "BLiMP" in table
    assert (out / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Again: nothing is scored twice.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("chck_*.json")}
    assert main(command) == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("chck_*.json")}


def test_trajectory_bad_input_is_one_line(
    milestone_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "evaluation_data"
    _pairs(data / "blimp_fast", "agreement", 4, uid=True)
    empty = tmp_path / "no-milestones"
    empty.mkdir()
    assert main(["trajectory", str(empty), "--data", str(data)]) == 2
    assert "no word-milestone checkpoints" in capsys.readouterr().err
    out = tmp_path / "busy"
    with folder_lock(out, "another command"):
        assert main(["trajectory", str(milestone_run), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} is in use by another another command" in err and err.count("\n") == 1
    assert not list(out.glob("*.json"))


def test_a_run_started_before_milestones_existed_still_resumes(
    prepared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "older"
    settings = {k: v for k, v in SETTINGS.items() if not k.startswith("milestone")}
    config = TrainConfig(**{**settings, "data": str(prepared_data), "out": str(out)})  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        train(config, objective=InterruptAfter(12))
    saved = out / "config.yaml"
    lines = saved.read_text().splitlines()
    saved.write_text("".join(f"{line}\n" for line in lines if not line.startswith("milestone")))
    assert train(config, resume=True).steps == 48  # the missing keys read as their defaults
