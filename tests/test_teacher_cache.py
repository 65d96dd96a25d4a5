"""Tests for the teacher cache (`tinyminds.training.teacher_cache`).

A fake ensemble (a fixed random table of logits per input token, softmax at temperature T) gives a
known distribution for every token, so the stored top-k buckets can be checked exactly; the
validity rules (same key reuses, other key / truncated file / interrupted build rebuilds) and the
split of the work between processes are checked on small arrays, on the CPU.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyminds.data.chunks import chunks_read, epoch_permutation
from tinyminds.training.teacher_cache import (
    FILLED_FILE,
    INDICES_FILE,
    META_FILE,
    REST_FILE,
    VALUES_FILE,
    CacheJob,
    TeacherCache,
    build_cache,
    cache_key,
    create_arrays,
    fill_rows,
    model_fingerprint,
    open_cache,
    open_or_build_cache,
    rank_share,
    staging_folder,
    top_k_buckets,
)

VOCAB = 50
CHUNK_LEN = 16
N_CHUNKS = 11
T = 2.0
CPU = torch.device("cpu")


def _table(seed: int = 0) -> torch.Tensor:
    return torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


class FakeEnsemble:
    """``log_softmax(table[input_ids] / T)``: the distribution of each token is known exactly."""

    def __init__(self, seed: int = 0) -> None:
        self.table = _table(seed)
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.log_softmax(self.table[input_ids] / T, dim=-1)


def _chunks(n: int = N_CHUNKS) -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, size=(n, CHUNK_LEN)).astype(np.uint16)


def _build(folder: Path, key: str = "key-a", k: int = 8, **kwargs) -> TeacherCache:
    options = {
        "chunks": _chunks(),
        "ensemble_log_probs": FakeEnsemble(),
        "k": k,
        "vocab_size": VOCAB,
        "batch_size": 4,
        "device": CPU,
    }
    options.update(kwargs)
    return open_or_build_cache(folder, key, **options)


# --- the numbers --------------------------------------------------------------------------------


def test_lookup_returns_the_top_k_of_the_ensemble(tmp_path: Path) -> None:
    k = 8
    cache = _build(tmp_path / "cache", k=k)
    chunks = _chunks()
    chunk_index = torch.tensor([3, 0, 10, 3], dtype=torch.int64)
    ids, top, rest = cache.lookup(chunk_index, CPU)
    assert ids.shape == (4, CHUNK_LEN, k) and ids.dtype == torch.int64
    assert top.shape == (4, CHUNK_LEN, k) and top.dtype == torch.float32
    assert rest.shape == (4, CHUNK_LEN) and rest.dtype == torch.float32

    exact = FakeEnsemble()(torch.from_numpy(chunks[chunk_index.numpy()].astype(np.int64)))
    want_top, want_ids = torch.topk(exact, k, dim=-1)
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(top, want_top, atol=5e-3, rtol=1e-3)
    want_rest = torch.log1p(-want_top.exp().sum(-1))
    torch.testing.assert_close(rest, want_rest, atol=1e-5, rtol=1e-5)
    # The k + 1 buckets are a distribution (up to the float16 rounding of the top k).
    total = top.exp().sum(-1) + rest.exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=2e-3, rtol=0)
    # Ids are stored as uint16 for this vocabulary, values as float16.
    assert cache.top_indices.dtype == np.uint16
    assert cache.top_log_probs.dtype == np.float16
    assert cache.rest_log_prob.dtype == np.float32


def test_k_equal_to_vocab_leaves_no_rest_and_no_nan(tmp_path: Path) -> None:
    cache = _build(tmp_path / "cache", k=VOCAB)
    ids, top, rest = cache.lookup(torch.arange(N_CHUNKS), CPU)
    assert not torch.isnan(top).any() and not torch.isnan(rest).any()
    assert torch.isneginf(rest).all()
    # Every token appears once per position.
    assert torch.equal(ids.sort(-1).values[0, 0], torch.arange(VOCAB))
    total = top.exp().sum(-1) + rest.exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=2e-3, rtol=0)


def test_top_k_buckets_is_stable_when_the_top_holds_nearly_all_mass() -> None:
    logits = torch.tensor([[40.0, 0.0, -1.0, -2.0]])
    log_probs = torch.log_softmax(logits, -1)
    _, top, rest = top_k_buckets(log_probs, 1)
    # 1 - p_top is ~4e-18: a log1p(-exp(top)) would return -inf; the logsumexp keeps it.
    want = torch.logsumexp(log_probs[:, 1:], -1)
    assert torch.isfinite(rest).all()
    torch.testing.assert_close(rest, want)
    assert top.item() == pytest.approx(0.0, abs=1e-6)


def test_bytes_per_token() -> None:
    def cache(k: int, id_dtype: type) -> TeacherCache:
        return TeacherCache(
            folder=Path("."),
            k=k,
            top_indices=np.zeros((1, 1, k), id_dtype),
            top_log_probs=np.zeros((1, 1, k), np.float16),
            rest_log_prob=np.zeros((1, 1), np.float32),
            filled=np.ones(1, np.bool_),
        )

    assert cache(32, np.uint16).bytes_per_token == 132  # 4k + 4
    assert cache(8, np.uint16).bytes_per_token == 36
    assert cache(32, np.int32).bytes_per_token == 196  # 6k + 4 past a 65,536-token vocabulary


def test_large_vocabulary_stores_int32_ids(tmp_path: Path) -> None:
    vocab = 70_000
    chunks = np.array([[1, 69_999, 5]], dtype=np.int64)

    def ensemble(input_ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*input_ids.shape, vocab)
        logits.scatter_(-1, input_ids.unsqueeze(-1), 10.0)
        return torch.log_softmax(logits, -1)

    cache = build_cache(
        CacheJob(
            tmp_path / "cache",
            "k",
            chunks=chunks,
            ensemble_log_probs=ensemble,
            k=2,
            vocab_size=vocab,
            batch_size=1,
            device=CPU,
        )
    )
    assert cache.top_indices.dtype == np.int32
    ids, _, _ = cache.lookup(torch.tensor([0]), CPU)
    assert ids[0, :, 0].tolist() == [1, 69_999, 5]


# --- validity: reuse, stale, truncated, interrupted ------------------------------------------------


def test_same_key_reuses_without_running_the_teachers(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is not None
    ensemble = FakeEnsemble()
    again = _build(folder, ensemble_log_probs=ensemble)
    assert ensemble.calls == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert again.folder == folder


def test_other_key_is_stale_and_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder, key="key-a", ensemble_log_probs=FakeEnsemble(seed=0))
    assert open_cache(folder, "key-b", N_CHUNKS, CHUNK_LEN) is None
    assert open_cache(folder, "key-a", N_CHUNKS + 1, CHUNK_LEN) is None  # other shapes
    ensemble = FakeEnsemble(seed=5)
    rebuilt = _build(folder, key="key-b", ensemble_log_probs=ensemble)
    assert ensemble.calls > 0
    ids, _, _ = rebuilt.lookup(torch.arange(N_CHUNKS), CPU)
    want = torch.topk(ensemble(torch.from_numpy(_chunks().astype(np.int64))), 8, -1).indices
    assert torch.equal(ids, want)
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is None
    assert not staging_folder(folder).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no staging or old folder left


@pytest.mark.parametrize("name", [INDICES_FILE, VALUES_FILE, REST_FILE, FILLED_FILE])
def test_truncated_array_is_detected_and_rebuilt(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "cache"
    _build(folder)
    path = folder / name
    os.truncate(path, path.stat().st_size - 3)
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is None
    ensemble = FakeEnsemble()
    cache = _build(folder, ensemble_log_probs=ensemble)
    assert ensemble.calls > 0
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is not None
    assert cache.rest_log_prob.shape == (N_CHUNKS, CHUNK_LEN)


def test_array_of_the_wrong_shape_is_detected(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder)
    np.save(folder / REST_FILE, np.zeros((N_CHUNKS, CHUNK_LEN + 1), np.float32))
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is None


def test_interrupted_build_is_never_read_and_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder)
    # A build killed before its rename: a staging folder with arrays but no meta.json.
    staging = staging_folder(folder)
    shutil.copytree(folder, staging)
    (staging / META_FILE).unlink()
    # A cache folder without meta.json (e.g. copied by hand, half-deleted) is not read either.
    (folder / META_FILE).unlink()
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is None
    ensemble = FakeEnsemble()
    _build(folder, ensemble_log_probs=ensemble)
    assert ensemble.calls > 0
    assert (folder / META_FILE).is_file()
    assert not staging.exists()
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is not None


def test_corrupt_meta_is_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder)
    (folder / META_FILE).write_text("{not json", encoding="utf-8")
    assert open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN) is None


def test_absent_cache_is_none(tmp_path: Path) -> None:
    assert open_cache(tmp_path / "nothing", "key-a", N_CHUNKS, CHUNK_LEN) is None


def test_wrong_ensemble_shape_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        _build(tmp_path / "cache", ensemble_log_probs=lambda ids: torch.zeros(*ids.shape, 7))
    assert not (tmp_path / "cache").exists()


# --- identity ---------------------------------------------------------------------------------


def test_model_fingerprint_follows_weights_and_config_only(tmp_path: Path) -> None:
    model = tmp_path / "teacher"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x01" * 3000)
    (model / "config.json").write_text('{"n_layer": 2}')
    (model / "README.md").write_text("hello")
    first = model_fingerprint(model)
    assert len(first) == 64 and model_fingerprint(model) == first

    (model / "README.md").write_text("changed")
    (model / "tokenizer.json").write_text("{}")
    (model / "training_args.bin").write_bytes(b"settings")
    assert model_fingerprint(model) == first

    (model / "model.safetensors").write_bytes(b"\x01" * 2999 + b"\x02")
    second = model_fingerprint(model)
    assert second != first

    (model / "config.json").write_text('{"n_layer": 3}')
    third = model_fingerprint(model)
    assert third not in (first, second)

    (model / "pytorch_model.bin").write_bytes(b"more weights")
    assert model_fingerprint(model) not in (first, second, third)


def test_cache_key_changes_with_each_ingredient() -> None:
    base = {
        "teacher_fingerprints": ["a" * 64, "b" * 64],
        "tokenizer_hash": "tok",
        "data_hash": "data",
        "k": 32,
        "temperature": 2.0,
        "weights": [0.5, 0.5],
        "mode": "logits",
    }
    key = cache_key(**base)
    assert cache_key(**dict(base)) == key
    assert cache_key(**{**base, "temperature": 2}) == key  # 2 and 2.0 are the same temperature
    variants = [
        {"teacher_fingerprints": ["a" * 64, "c" * 64]},
        {"teacher_fingerprints": ["b" * 64, "a" * 64]},
        {"tokenizer_hash": "tok2"},
        {"data_hash": "data2"},
        {"k": 16},
        {"temperature": 1.0},
        {"weights": [0.7, 0.3]},
        {"mode": "probs"},
    ]
    keys = {cache_key(**{**base, **change}) for change in variants}
    assert key not in keys and len(keys) == len(variants)


# --- several processes ------------------------------------------------------------------------


def test_rank_shares_are_contiguous_and_cover_the_rows_once() -> None:
    for n, world in [(11, 2), (11, 3), (2, 4), (0, 2), (128, 8)]:
        rows = np.arange(0, 3 * n, 3)
        shares = [rank_share(rows, rank, world) for rank in range(world)]
        assert np.array_equal(np.concatenate(shares), rows)
        assert max(len(a) for a in shares) - min(len(a) for a in shares) <= 1


def test_two_shares_filled_separately_equal_one_process(tmp_path: Path) -> None:
    chunks = _chunks()
    single = _build(tmp_path / "single", chunks=chunks)

    staging = tmp_path / "staging"
    create_arrays(staging, n_chunks=N_CHUNKS, chunk_len=CHUNK_LEN, k=8, vocab_size=VOCAB)
    for rank in (1, 0):
        fill_rows(
            staging,
            rank_share(np.arange(N_CHUNKS), rank, 2),
            chunks=chunks,
            ensemble_log_probs=FakeEnsemble(),
            k=8,
            vocab_size=VOCAB,
            batch_size=3,
            device=CPU,
        )
    for name, array in [
        (INDICES_FILE, single.top_indices),
        (VALUES_FILE, single.top_log_probs),
        (REST_FILE, single.rest_log_prob),
    ]:
        assert np.array_equal(np.load(staging / name), array)


def test_build_with_two_ranks_and_a_real_barrier(tmp_path: Path) -> None:
    """Two threads play two processes: rank 0 creates and publishes, each fills its own half."""
    chunks = _chunks()
    single = _build(tmp_path / "single", chunks=chunks)
    folder = tmp_path / "shared"
    barrier = threading.Barrier(2, timeout=60)
    calls = [FakeEnsemble(), FakeEnsemble()]
    results: dict[int, TeacherCache] = {}
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            results[rank] = open_or_build_cache(
                folder,
                "key-a",
                chunks=chunks,
                ensemble_log_probs=calls[rank],
                k=8,
                vocab_size=VOCAB,
                batch_size=4,
                device=CPU,
                rank=rank,
                world_size=2,
                barrier=barrier.wait,
            )
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # Each rank ran the teachers on its own share only: 6 chunks (2 batches) and 5 chunks (2 batches).
    assert [c.calls for c in calls] == [2, 2]
    for rank in range(2):
        cache = results[rank]
        assert np.array_equal(cache.top_indices, single.top_indices)
        assert np.array_equal(cache.top_log_probs, single.top_log_probs)
        assert np.array_equal(cache.rest_log_prob, single.rest_log_prob)
    assert not staging_folder(folder).exists()


def test_sampled_buckets_are_deterministic_per_chunk_and_follow_the_distribution() -> None:
    from tinyminds.training.teacher_cache import sampled_buckets

    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(2, 3, 6, generator=generator), -1)
    ids, values, rest = sampled_buckets(log_probs, 4000, seeds=[10, 11])
    again, _, _ = sampled_buckets(log_probs[1:], 4000, seeds=[11])
    assert torch.equal(ids[1:], again)  # a chunk's draws depend on its seed only
    torch.testing.assert_close(values, log_probs.gather(-1, ids))
    assert torch.count_nonzero(rest) == 0
    frequencies = torch.nn.functional.one_hot(ids, 6).float().mean(-2)
    torch.testing.assert_close(frequencies, log_probs.exp(), atol=0.03, rtol=0.0)


def test_hybrid_buckets_keep_the_head_and_draw_the_tail_outside_it() -> None:
    from tinyminds.training.teacher_cache import hybrid_buckets, top_k_buckets

    generator = torch.Generator().manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(2, 3, 8, generator=generator), -1)
    ids, values, rest = hybrid_buckets(log_probs, 6, seeds=[5, 6])  # 3 head tokens, 3 draws
    again, _, _ = hybrid_buckets(log_probs[1:], 6, seeds=[6])
    assert torch.equal(ids[1:], again)  # a chunk's draws depend on its seed only
    head_ids, _, head_rest = top_k_buckets(log_probs, 3)
    assert torch.equal(ids[..., :3], head_ids)
    torch.testing.assert_close(rest, head_rest)
    torch.testing.assert_close(values, log_probs.gather(-1, ids))
    assert not (ids[..., 3:, None] == head_ids[..., None, :]).any()  # draws avoid the head
    # The draws follow the teacher's distribution renormalised outside the head.
    tail = log_probs.exp().scatter(-1, head_ids, 0.0)
    draws = torch.cat(
        [hybrid_buckets(log_probs, 6, seeds=[2 * i, 2 * i + 1])[0][..., 3:] for i in range(600)],
        dim=-1,
    )
    frequencies = torch.nn.functional.one_hot(draws, 8).float().mean(-2)
    torch.testing.assert_close(frequencies, tail / tail.sum(-1, keepdim=True), atol=0.04, rtol=0.0)


def test_hybrid_buckets_with_an_empty_tail_draw_without_error() -> None:
    from tinyminds.training.teacher_cache import hybrid_buckets

    log_probs = torch.full((1, 2, 5), float("-inf"))
    log_probs[..., :2] = math.log(0.5)  # all the mass on two tokens
    ids, _, rest = hybrid_buckets(log_probs, 4, seeds=[0])
    assert torch.all(rest == float("-inf")) and ids.shape == (1, 2, 4)


# --- only the chunks a run reads ----------------------------------------------------------------


def test_only_the_chunks_asked_for_are_computed_and_others_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    ensemble = FakeEnsemble()
    cache = _build(folder, ensemble_log_probs=ensemble, batch_size=1, rows=np.array([7, 2, 7]))
    assert ensemble.calls == 2  # chunks 2 and 7, one per batch
    assert np.flatnonzero(cache.filled).tolist() == [2, 7]
    full = _build(tmp_path / "full")
    ids, top, rest = cache.lookup(torch.tensor([7, 2]), CPU)
    want_ids, want_top, want_rest = full.lookup(torch.tensor([7, 2]), CPU)
    assert (
        torch.equal(ids, want_ids) and torch.equal(top, want_top) and torch.equal(rest, want_rest)
    )
    # A chunk never computed is an error, not a row of zeros.
    with pytest.raises(RuntimeError, match="chunk 3 is not in the teacher cache"):
        cache.lookup(torch.tensor([2, 3]), CPU)


def test_a_later_run_adds_only_the_missing_chunks_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder, rows=np.array([0, 1, 2]))
    meta_before = (folder / META_FILE).read_bytes()
    ensemble = FakeEnsemble()
    cache = _build(folder, ensemble_log_probs=ensemble, batch_size=1, rows=np.array([1, 2, 5, 9]))
    assert ensemble.calls == 2  # 5 and 9 only
    assert np.flatnonzero(cache.filled).tolist() == [0, 1, 2, 5, 9]
    assert (folder / META_FILE).read_bytes() == meta_before  # the same cache, grown
    full = _build(tmp_path / "full")
    rows = torch.tensor([0, 1, 2, 5, 9])
    for got, want in zip(cache.lookup(rows, CPU), full.lookup(rows, CPU), strict=True):
        assert torch.equal(got, want)
    # Everything asked for is there now: nothing runs.
    ensemble = FakeEnsemble()
    _build(folder, ensemble_log_probs=ensemble, rows=np.array([9, 0]))
    assert ensemble.calls == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_process_killed_while_adding_chunks_leaves_them_unmarked(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    _build(folder, rows=np.array([0, 1]))

    class DiesOnSecondBatch(FakeEnsemble):
        def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
            if self.calls == 1:
                raise KeyboardInterrupt  # stands for kill -9 mid-way through the added rows
            return super().__call__(input_ids)

    with pytest.raises(KeyboardInterrupt):
        _build(folder, ensemble_log_probs=DiesOnSecondBatch(), batch_size=1, rows=np.arange(5))
    cache = open_cache(folder, "key-a", N_CHUNKS, CHUNK_LEN)
    assert cache is not None and np.flatnonzero(cache.filled).tolist() == [0, 1]
    ensemble = FakeEnsemble()
    cache = _build(folder, ensemble_log_probs=ensemble, batch_size=1, rows=np.arange(5))
    assert ensemble.calls == 3
    full = _build(tmp_path / "full")
    for got, want in zip(
        cache.lookup(torch.arange(5), CPU), full.lookup(torch.arange(5), CPU), strict=True
    ):
        assert torch.equal(got, want)


def test_chunks_read_follow_the_engine_order() -> None:
    n, seed, per_step, steps_per_epoch = 50, 3, 8, 6  # 48 of 50 chunks per epoch
    first_two_steps = chunks_read(n, seed, per_step, steps_per_epoch, total_steps=2)
    assert first_two_steps.tolist() == sorted(epoch_permutation(n, seed, 0)[:16].tolist())
    one_epoch_and_a_step = chunks_read(n, seed, per_step, steps_per_epoch, total_steps=7)
    want = set(epoch_permutation(n, seed, 0)[:48].tolist()) | set(
        epoch_permutation(n, seed, 1)[:8].tolist()
    )
    assert one_epoch_and_a_step.tolist() == sorted(want)
