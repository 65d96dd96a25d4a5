"""Tests for reading prepared data (`tinyminds.data.chunks`): epoch order, validation subset, loading.

The permutation and the subset are pure functions of their arguments, which is what lets a resumed
run find its place and every run validate on the same chunks; loading fails with a `UserError`
that says what to run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinyminds.console import set_quiet
from tinyminds.data.chunks import epoch_permutation, load_prepared, validation_subset
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.errors import UserError

# --- epoch permutation ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000])
def test_epoch_permutation_is_a_permutation(n: int) -> None:
    order = epoch_permutation(n, seed=42, epoch=0)
    assert order.shape == (n,)
    assert sorted(order.tolist()) == list(range(n))


def test_epoch_permutation_is_deterministic() -> None:
    for seed, epoch in [(0, 0), (42, 3), (7, 10)]:
        assert np.array_equal(
            epoch_permutation(500, seed, epoch), epoch_permutation(500, seed, epoch)
        )


def test_epoch_permutation_differs_between_epochs_and_seeds() -> None:
    orders = {
        (seed, epoch): tuple(epoch_permutation(500, seed, epoch).tolist())
        for seed in (0, 1, 42)
        for epoch in range(4)
    }
    assert len(set(orders.values())) == len(orders)
    # Not the identity either.
    assert orders[(42, 0)] != tuple(range(500))


def test_epoch_permutation_does_not_depend_on_earlier_calls() -> None:
    later = epoch_permutation(300, seed=5, epoch=3)
    for epoch in range(3):
        epoch_permutation(300, seed=5, epoch=epoch)
    np.random.seed(123)  # the global generator plays no part
    assert np.array_equal(epoch_permutation(300, seed=5, epoch=3), later)


# --- validation subset ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(1000, 10), (1000, 999), (20, 1), (8192 * 2, 8192)])
def test_validation_subset_is_sorted_unique_and_of_the_requested_size(n: int, size: int) -> None:
    subset = validation_subset(n, size, seed=42)
    assert len(subset) == size
    assert np.all(np.diff(subset) > 0)  # sorted and unique
    assert subset.min() >= 0 and subset.max() < n


def test_validation_subset_is_deterministic_and_depends_on_the_seed() -> None:
    first = validation_subset(1000, 50, seed=42)
    np.random.seed(0)
    epoch_permutation(1000, seed=42, epoch=2)  # other random draws do not move it
    assert np.array_equal(validation_subset(1000, 50, seed=42), first)
    assert not np.array_equal(validation_subset(1000, 50, seed=43), first)


@pytest.mark.parametrize(("n", "size"), [(10, 10), (10, 11), (10, 8192), (10, 0), (0, 5), (0, 0)])
def test_validation_subset_returns_everything(n: int, size: int) -> None:
    assert validation_subset(n, size, seed=1).tolist() == list(range(n))


# --- loading ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chunks")
    words = ["the", "dog", "saw", "a", "cat", "and", "the", "cat", "ran", "home", "to", "mother"]
    lines = [" ".join(words[i % 5 :] + words[: i % 7]) + "." for i in range(60)]
    for split, part in (("train", lines[:45]), ("dev", lines[45:])):
        folder = root / "corpus" / split
        folder.mkdir(parents=True)
        (folder / f"childes.{split}").write_text("\n".join(part) + "\n", encoding="utf-8")
    set_quiet(True)
    try:
        prepare(root / "corpus", root / "out", PrepareOptions(vocab_size=300, chunk_size=16))
    finally:
        set_quiet(False)
    return root / "out"


def copy_prepared(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("manifest.json", "train.npy", "dev.npy"):
        (target / name).write_bytes((source / name).read_bytes())
    shutil.copytree(source / "tokenizer", target / "tokenizer")
    return target


def test_load_prepared(prepared: Path) -> None:
    data = load_prepared(prepared)
    for split in ("train", "dev"):
        chunks = data.chunks(split)
        assert chunks.shape == (data.manifest["splits"][split]["chunks"], 16)
        assert chunks.dtype == np.uint16


def test_load_prepared_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        load_prepared(tmp_path)
    assert "tinyminds prepare" in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_load_prepared_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        load_prepared(tmp_path / "nowhere")
    assert "tinyminds prepare" in str(error.value)


def test_load_prepared_with_a_corrupt_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="tinyminds prepare"):
        load_prepared(tmp_path)


@pytest.mark.parametrize("key", ["chunks", "chunk_size"])
def test_manifest_disagreeing_with_the_npy_shape(prepared: Path, tmp_path: Path, key: str) -> None:
    folder = copy_prepared(prepared, tmp_path / "copy")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["splits"]["train"][key] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    data = load_prepared(folder)
    data.chunks("dev")  # the other split is fine
    with pytest.raises(UserError) as error:
        data.chunks("train")
    assert "train.npy" in str(error.value) and "tinyminds prepare" in str(error.value)


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_unreadable_npy(prepared: Path, tmp_path: Path, damage: str) -> None:
    folder = copy_prepared(prepared, tmp_path / "copy")
    if damage == "missing":
        (folder / "train.npy").unlink()
    else:
        (folder / "train.npy").write_bytes(b"not an npy file")
    with pytest.raises(UserError) as error:
        load_prepared(folder).chunks("train")
    assert "train.npy" in str(error.value)


def test_tokenizer_not_matching_the_manifest(prepared: Path, tmp_path: Path) -> None:
    folder = copy_prepared(prepared, tmp_path / "copy")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["tokenizer"]["hash"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError, match="tokenizer does not match"):
        load_prepared(folder)
