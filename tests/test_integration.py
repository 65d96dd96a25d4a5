"""Real BabyLM data: prepare a slice of babylm-mini and train a tiny model whose validation CE falls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tinyminds.data.chunks import load_prepared
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.training.config import TrainConfig
from tinyminds.training.engine import train

pytestmark = pytest.mark.slow

SOURCES = ("bnc_spoken", "childes", "gutenberg", "open_subtitles", "simple_wiki", "switchboard")


def _slice(source: Path, target: Path, lines: int) -> None:
    """The first ``lines`` lines of ``source`` (a real slice, never printed or kept)."""
    with source.open(encoding="utf-8") as handle:
        head = [line for _, line in zip(range(lines), handle, strict=False)]
    target.write_text("".join(head), encoding="utf-8")


@pytest.fixture(scope="module")
def mini_slice(babylm_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("babylm-slice")
    for split, suffix, lines in (("train", "train", 4000), ("dev", "dev", 1500)):
        (corpus / split).mkdir()
        for source in SOURCES:
            _slice(
                babylm_mini / split / f"{source}.{suffix}",
                corpus / split / f"{source}.{suffix}",
                lines,
            )
    return corpus


def test_prepare_and_train_on_a_babylm_mini_slice(mini_slice: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manifest = prepare(mini_slice, data_dir, PrepareOptions(vocab_size=2000))
    train_split = manifest["splits"]["train"]
    assert set(train_split["sources"]) == set(SOURCES)
    rules = {name: entry["rule"] for name, entry in train_split["sources"].items()}
    assert rules["simple_wiki"] == "wikipedia" and rules["childes"] == "spaces"
    assert rules["gutenberg"] == rules["switchboard"] == "unchanged"
    assert train_split["chunks"] == train_split["tokens"] // 128 > 1000
    assert load_prepared(data_dir).chunks("train").dtype.name == "uint16"

    config = TrainConfig(
        model="gpt2-tiny",
        data=str(data_dir),
        out=str(tmp_path / "run"),
        epochs=2,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        eval_chunks=256,
        checkpoint_every=0,
        log_every=10,
    )
    result = train(config)
    ces = [record["ce"] for record in result.validation]
    assert len(ces) == 2
    assert ces[1] < ces[0] < math.log(2000) - 0.5, ces
    assert (result.model_dir / "model.safetensors").is_file()
