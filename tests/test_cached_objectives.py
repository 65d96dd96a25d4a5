"""Contrastive and MATE-KD read from the teacher cache: equal to their online selves on the same
batch up to the cache's precision, no teacher run where the cache serves, and caches keyed by the
representations they hold (issue 16, parts 2 and 3)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_process_context
from transformers import AutoModelForCausalLM

from tinyminds.data.chunks import PreparedData, load_prepared
from tinyminds.data.tokenizer import load_tokenizer
from tinyminds.errors import UserError
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training.config import DistillConfig
from tinyminds.training.objectives.base import (
    Batch,
    ObjectiveOutput,
    SetupContext,
    causal_lm_cross_entropy,
)
from tinyminds.training.objectives.contrastive import ContrastiveObjective
from tinyminds.training.objectives.distillation import DistillationObjective, distill
from tinyminds.training.objectives.kd_losses import kd_loss, reduce_kl
from tinyminds.training.objectives.mate import MateObjective
from tinyminds.training.teacher_cache import (
    RepresentationSpec,
    open_cache,
    open_or_build_cache,
)

ROWS = np.arange(4, 12)
"""The training chunks the tests' batch reads (the cache holds exactly these)."""


@pytest.fixture(scope="module")
def data(prepared_data: Path) -> PreparedData:
    return load_prepared(prepared_data)


def _save_models(data: PreparedData, root: Path, names: tuple[str, ...], seed: int) -> list[str]:
    """Randomly initialised models saved with the data's tokenizer (their outputs matter here,
    not their skill)."""
    folders = []
    for name in names:
        torch.manual_seed(seed)
        build_model(get_spec(name), data.vocab_size).save_pretrained(root / name)
        load_tokenizer(data.tokenizer_dir).save_pretrained(root / name)
        folders.append(str(root / name))
    return folders


@pytest.fixture(scope="module")
def teacher_dirs(data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _save_models(data, tmp_path_factory.mktemp("teachers"), ("gpt2-tiny", "llama-tiny"), 0)


def _context(data: PreparedData, run_dir: Path) -> SetupContext:
    return one_process_context(data, run_dir, ROWS)


def _kd(teacher_dirs: list[str], **changes: object) -> DistillationObjective:
    config = DistillConfig(
        **{"model": "llama-tiny", "teachers": teacher_dirs, "temperature": 2.0, **changes}  # type: ignore[arg-type]
    )
    teachers = [
        AutoModelForCausalLM.from_pretrained(d).eval().requires_grad_(False) for d in teacher_dirs
    ]
    return DistillationObjective(teachers, teacher_dirs, config)


def _batch(data: PreparedData) -> Batch:
    ids = torch.from_numpy(np.asarray(data.chunks("train")[ROWS], dtype=np.int64))
    return Batch(ids, torch.from_numpy(ROWS), "train")


def _forbid_teachers(objective: DistillationObjective) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teachers ran although the cache serves this step")

    objective.run_teachers = refuse  # type: ignore[method-assign]
    objective.ensemble_log_probs = refuse  # type: ignore[method-assign]


def _student(data: PreparedData) -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model(get_spec("llama-tiny"), data.vocab_size)


def _loss_and_grads(
    objective: object, student: torch.nn.Module, batch: Batch
) -> tuple[dict[str, float], list[torch.Tensor]]:
    student.zero_grad(set_to_none=True)
    output = objective(student, batch)  # type: ignore[operator]
    output.loss.backward()
    values = {"loss": output.loss.item(), **{k: v.item() for k, v in output.metrics.items()}}
    return values, [p.grad.clone() for p in student.parameters()]  # type: ignore[union-attr]


def _close_gradients(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Each parameter's gradient within 1% of the reference's norm (float16 cached log-probs
    move single entries by more than a relative 1% where the gradient is near 0)."""
    for a, b in zip(got, want, strict=True):
        assert (a - b).norm() <= 1e-2 * b.norm() + 1e-8


# ------------------------------------------------------------------------------------------- KD


@pytest.mark.parametrize("selection", ["topk", "sample", "hybrid"])
def test_cached_kd_in_one_pass_equals_its_terms_apart_and_online_kd(
    selection: str, data: PreparedData, teacher_dirs: list[str], tmp_path: Path
) -> None:
    """The KD objective's cached step (CE and KL in one pass, kd_losses.cached_kd_loss) gives the
    loss and gradients of CE + the cached KL computed apart; with a top-k cache holding the
    whole vocabulary, those of online KD (whose ensemble is mixed inside the KL)."""
    k = data.vocab_size if selection == "topk" else 16
    settings = {"cache_selection": selection, "cache_k": k, "cache_dir": str(tmp_path / "c")}
    cached = _kd(teacher_dirs, teacher_cache=True, **settings)
    cached.setup(_context(data, tmp_path))
    _forbid_teachers(cached)
    student, batch = _student(data), _batch(data)
    got, got_grads = _loss_and_grads(cached, student, batch)

    def apart(model: torch.nn.Module, batch: Batch) -> ObjectiveOutput:
        logits = model(input_ids=batch.input_ids).logits
        ce = causal_lm_cross_entropy(logits, batch.input_ids)
        kl = reduce_kl(cached.cached_divergence(logits, batch), "sequence")
        return ObjectiveOutput(kd_loss(ce, kl, 0.5, 2.0), {"ce": ce, "kl": kl})

    want, want_grads = _loss_and_grads(apart, student, batch)
    for key in ("loss", "ce", "kl"):
        assert got[key] == pytest.approx(want[key], rel=1e-5)
    _close_gradients(got_grads, want_grads)
    if selection == "topk":
        online = _kd(teacher_dirs, teacher_cache=False)
        online.setup(_context(data, tmp_path))
        exact, exact_grads = _loss_and_grads(online, student, batch)
        assert got["ce"] == pytest.approx(exact["ce"], rel=1e-5)
        assert got["kl"] == pytest.approx(exact["kl"], rel=2e-3, abs=1e-4)
        _close_gradients(got_grads, exact_grads)


# ------------------------------------------------------------------------------------ contrastive


@pytest.mark.parametrize("representation", ["hidden", "logits"])
def test_cached_contrastive_equals_online_on_the_same_batch(
    representation: str, data: PreparedData, teacher_dirs: list[str], tmp_path: Path
) -> None:
    # k = V: the top-k cache holds the whole ensemble, so the only difference left is its
    # float16 log-probabilities (and float16 logit means for the logits representation).
    settings = {
        "objective": "contrastive",
        "contrastive_representation": representation,
        "cache_selection": "topk",
        "cache_k": data.vocab_size,
        "cache_dir": str(tmp_path / "cache"),
    }

    def objective(cached: bool) -> ContrastiveObjective:
        kd = _kd(teacher_dirs, teacher_cache=cached, **settings)
        made = ContrastiveObjective(kd, get_spec("llama-tiny").hidden, seed=5)
        made.setup(_context(data, tmp_path))
        return made

    online, cached = objective(False), objective(True)
    assert cached.kd.cache is not None and len(cached.kd.cache.representations) == 2
    _forbid_teachers(cached.kd)
    student, batch = _student(data), _batch(data)
    want, want_grads = _loss_and_grads(online, student, batch)
    got, got_grads = _loss_and_grads(cached, student, batch)
    contrastive_tolerance = 1e-6 if representation == "hidden" else 1e-3
    assert got["contrastive"] == pytest.approx(want["contrastive"], rel=contrastive_tolerance)
    assert got["kl"] == pytest.approx(want["kl"], rel=2e-3, abs=1e-4)
    assert got["ce"] == want["ce"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-3)
    _close_gradients(got_grads, want_grads)
    # validation runs the teachers online (dev chunks are not cached)
    with pytest.raises(AssertionError, match="the teachers ran"):
        cached(student, dataclasses.replace(batch, split="dev"))


def test_representations_are_part_of_the_cache_key(
    data: PreparedData, teacher_dirs: list[str], tmp_path: Path
) -> None:
    def contrastive_key(dirs: list[str], representation: str = "hidden") -> str:
        kd = _kd(dirs, objective="contrastive", contrastive_representation=representation)
        ContrastiveObjective(kd, get_spec("llama-tiny").hidden, seed=5)
        return kd.cache_key(data)

    plain = _kd(teacher_dirs).cache_key(data)
    hidden = contrastive_key(teacher_dirs)
    assert len({plain, hidden, contrastive_key(teacher_dirs, "logits")}) == 3
    # other teachers (another initialisation) or other training chunks: another cache
    others = _save_models(data, tmp_path, ("gpt2-tiny", "llama-tiny"), seed=1)
    assert contrastive_key(others) != hidden
    manifest = json.loads(json.dumps(data.manifest))
    manifest["splits"]["train"]["file_sha256"] = "0" * 64
    other_chunks = dataclasses.replace(data, manifest=manifest)
    kd = _kd(teacher_dirs, objective="contrastive")
    ContrastiveObjective(kd, get_spec("llama-tiny").hidden, seed=5)
    assert kd.cache_key(other_chunks) != hidden


def test_a_cache_stores_representations_for_the_chunks_read_only(tmp_path: Path) -> None:
    chunks = np.random.default_rng(0).integers(0, 50, size=(20, 16))
    spec = RepresentationSpec("hidden", (6, 4))

    def teacher_pass(ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        generator = torch.Generator().manual_seed(int(ids[0, 0]))
        log_probs = torch.log_softmax(torch.randn(*ids.shape, 50, generator=generator), -1)
        # A representation that names its chunk: the chunk's first tokens, as floats.
        return log_probs, [ids[:, :6].float() * 1.5, ids[:, :4].float() - 2.0]

    rows = np.array([2, 3, 5, 11])
    common = {"chunks": chunks, "k": 8, "vocab_size": 50, "batch_size": 3,
              "device": torch.device("cpu"), "selection": "topk"}  # fmt: skip
    cache = open_or_build_cache(
        tmp_path / "c", "key", ensemble_log_probs=teacher_pass, rows=rows,
        representations=spec, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    index = torch.tensor([11, 2])
    first, second = cache.lookup_representations(index, torch.device("cpu"))
    assert first.dtype == torch.float32 and first.shape == (2, 6) and second.shape == (2, 4)
    expected = torch.from_numpy(chunks[[11, 2]]).float()
    assert torch.equal(first, expected[:, :6] * 1.5) and torch.equal(second, expected[:, :4] - 2)
    with pytest.raises(RuntimeError, match="chunk 7 is not in the teacher cache"):
        cache.lookup_representations(torch.tensor([7]), torch.device("cpu"))
    # k * (2 + 2) + 4 bytes of buckets plus (6 + 4) float32 per 16-token chunk
    assert cache.bytes_per_token == 8 * 4 + 4 + (6 + 4) * 4 / 16
    # A cache is reused only for the representations it holds.
    assert open_cache(tmp_path / "c", "key", 20, 16, spec) is not None
    assert open_cache(tmp_path / "c", "key", 20, 16) is None
    assert open_cache(tmp_path / "c", "key", 20, 16, RepresentationSpec("hidden", (6, 5))) is None
    assert open_cache(tmp_path / "c", "key", 20, 16, RepresentationSpec("logits", (6, 4))) is None


# ------------------------------------------------------------------------------------ MATE-KD


def test_cached_mate_loss_equals_online_within_the_cache_precision(
    data: PreparedData, teacher_dirs: list[str], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    generator = build_model(get_spec("electra-tiny"), data.vocab_size + 1)
    settings = {
        "objective": "mate",
        "generator": "g",
        "cache_selection": "topk",
        "cache_k": data.vocab_size,
        "cache_dir": str(tmp_path / "cache"),
    }

    def objective(cached: bool) -> MateObjective:
        made = MateObjective(_kd(teacher_dirs, teacher_cache=cached, **settings), generator)
        made.setup(_context(data, tmp_path))
        return made

    online, cached = objective(False), objective(True)
    assert cached.kd.cache is not None
    student, batch = _student(data), _batch(data)
    ran: list[int] = []
    run_teachers = cached.kd.run_teachers

    def counted(ids: torch.Tensor, hidden_states: bool = False) -> list:
        ran.append(ids.shape[0])
        return run_teachers(ids, hidden_states)

    cached.kd.run_teachers = counted  # type: ignore[method-assign]
    torch.manual_seed(7)  # the same masks and Gumbel noise for both
    want, want_grads = _loss_and_grads(online, student, batch)
    torch.manual_seed(7)
    got, got_grads = _loss_and_grads(cached, student, batch)
    assert ran == [len(ROWS)]  # the teachers read the perturbed half only
    # the cached path computes the CE in the KL's pass (kd_losses.cached_kd_loss)
    assert got["ce"] == pytest.approx(want["ce"], rel=1e-6)
    assert got["kd_adv"] == pytest.approx(want["kd_adv"], rel=1e-5)
    assert got["kd_orig"] == pytest.approx(want["kd_orig"], rel=2e-3, abs=1e-4)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-3)
    _close_gradients(got_grads, want_grads)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"objective": "mate", "generator": "g", "divergence": "reverse_kl"},
            "cannot be estimated from sampled teacher tokens",
        ),
        (
            {"objective": "contrastive", "divergence": "jsd"},
            "divergence=jsd",
        ),
    ],
)
def test_divergences_the_cache_cannot_serve_are_refused_for_every_objective(
    changes: dict[str, object], message: str, tmp_path: Path
) -> None:
    config = DistillConfig(
        model="llama-tiny", teachers=["a", "b"], data=str(tmp_path / "no-data"),
        out=str(tmp_path / "run"), **changes,  # type: ignore[arg-type]
    )  # fmt: skip
    with pytest.raises(UserError, match=message):
        distill(config)
    assert not (tmp_path / "run").exists()
