"""Contrastive distillation: the N-pair loss against a naive reference, and the objective end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import one_process_context

from tinyminds.data.chunks import load_prepared
from tinyminds.data.tokenizer import load_tokenizer
from tinyminds.errors import UserError
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training.config import DistillConfig
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.base import Batch
from tinyminds.training.objectives.contrastive import (
    ContrastiveObjective,
    teacher_representations,
)
from tinyminds.training.objectives.distillation import DistillationObjective, distill
from tinyminds.training.objectives.kd_losses import info_nce, mean_pool

# ---------------------------------------------------------------------------- naive reference


def naive_info_nce(
    teacher: list[list[float]], student: list[list[float]], temperature: float, similarity: str
) -> float:
    """-mean_i log(exp(sim(t_i, s_i)/tau) / sum_j exp(sim(t_i, s_j)/tau)), one pair at a time."""

    def sim(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        if similarity == "dot":
            return dot
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    n = len(teacher)
    total = 0.0
    for i in range(n):
        scores = [sim(teacher[i], student[j]) / temperature for j in range(n)]
        top = max(scores)
        log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
        total += -(scores[i] - log_norm)
    return total / n


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_info_nce_matches_naive_reference(similarity: str, temperature: float) -> None:
    generator = torch.Generator().manual_seed(3)
    teacher = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    student = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    expected = naive_info_nce(teacher.tolist(), student.tolist(), temperature, similarity)
    got = info_nce(teacher, student, temperature, similarity)  # type: ignore[arg-type]
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # float32 inputs are computed in float32, close to the float64 value
    low = info_nce(teacher.float(), student.float(), temperature, similarity)  # type: ignore[arg-type]
    assert low.item() == pytest.approx(expected, rel=1e-4)


def test_info_nce_and_mean_pool_edge_cases() -> None:
    states = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    assert torch.equal(mean_pool(states), states.mean(dim=1))
    with pytest.raises(ValueError, match="at least 2 sequences"):
        info_nce(torch.ones(1, 4), torch.ones(1, 4), 0.1)
    with pytest.raises(ValueError, match="one shape"):
        info_nce(torch.ones(3, 4), torch.ones(3, 5), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(3, 4), torch.ones(3, 4), 0.0)
    # Perfectly aligned, well separated pairs: the loss tends to 0.
    eye = torch.eye(4, dtype=torch.float64)
    assert info_nce(eye, eye, 0.01).item() < 1e-40


# ---------------------------------------------------------------------------- the objective


def _config(**changes: object) -> DistillConfig:
    values: dict[str, object] = {
        "model": "llama-tiny",
        "teachers": ["a", "b"],
        "objective": "contrastive",
        "teacher_cache": False,
        **changes,
    }
    return DistillConfig(**values)  # type: ignore[arg-type]


def _objective(config: DistillConfig, vocab: int = 50) -> ContrastiveObjective:
    torch.manual_seed(0)
    teachers = [
        build_model(get_spec(name), vocab).eval().requires_grad_(False)
        for name in ("gpt2-tiny", "llama-tiny")
    ]
    kd = DistillationObjective(teachers, ["a", "b"], config)
    objective = ContrastiveObjective(kd, get_spec(config.model).hidden, seed=5)
    objective.setup(one_process_context())
    return objective


def _positive_similarity(
    objective: ContrastiveObjective, student: torch.nn.Module, ids: torch.Tensor
) -> float:
    """Mean cosine similarity of the (teacher, projected student) pairs of the same input."""
    with torch.no_grad():
        output = student(input_ids=ids, output_hidden_states=True)
        teachers = objective.kd.run_teachers(ids, hidden_states=True)
        pairs = list(
            zip(
                teacher_representations("hidden", teachers),
                objective.student_representations(output),
                strict=True,
            )
        )
        return sum(
            torch.nn.functional.cosine_similarity(t, s, dim=-1).mean().item() for t, s in pairs
        ) / len(pairs)


def test_projections_are_owned_and_positive_similarity_rises() -> None:
    config = _config(ce_weight=0.0, kd_weight=0.0, contrastive_weight=1.0)
    objective = _objective(config)
    # One projection per teacher, student width -> teacher width; the teachers are not submodules.
    assert [tuple(p.weight.shape) for p in objective.projections] == [(128, 128), (128, 128)]
    assert set(objective.state_dict()) == {"projections.0.weight", "projections.1.weight"}
    torch.manual_seed(1)
    student = build_model(get_spec("llama-tiny"), 50)
    ids = torch.randint(3, 50, (8, 16))
    batch = Batch(ids, torch.arange(8), "train")
    before = _positive_similarity(objective, student, ids)
    teacher_before = [p.clone() for t in objective.kd.teachers for p in t.parameters()]
    optimizer = torch.optim.Adam([*student.parameters(), *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(5):
        output = objective(student, batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.metrics["contrastive"].item())
    after = _positive_similarity(objective, student, ids)
    assert after > before + 0.05
    assert losses[-1] < losses[0]
    teacher_after = [p for t in objective.kd.teachers for p in t.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher_after, strict=True))


def test_logits_representation_needs_no_projection() -> None:
    objective = _objective(_config(contrastive_representation="logits"))
    assert len(objective.projections) == 0
    torch.manual_seed(1)
    student = build_model(get_spec("llama-tiny"), 50)
    ids = torch.randint(3, 50, (4, 16))
    output = objective(student, Batch(ids, torch.arange(4), "train"))
    metrics = {k: v.item() for k, v in output.metrics.items()}
    expected = 0.39 * metrics["ce"] + 0.39 * 4.0 * metrics["kl"] + 0.22 * metrics["contrastive"]
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    # the contrastive term is the ensemble-weighted mean of each teacher's InfoNCE on mean logits
    with torch.no_grad():
        student_rep = mean_pool(student(input_ids=ids).logits)
        per_teacher = [
            info_nce(mean_pool(t(input_ids=ids).logits), student_rep, 0.1)
            for t in objective.kd.teachers
        ]
    assert metrics["contrastive"] == pytest.approx(sum(per_teacher).item() / 2, rel=1e-5)


# ---------------------------------------------------------------------------- refused settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 1}, "at least 2 sequences per micro-batch"),
        ({"contrastive_weight": -0.1}, r"'contrastive_weight' is -0.1; allowed: a number >= 0"),
        (
            {"ce_weight": 0.0, "kd_weight": 0.0, "contrastive_weight": 0.0},
            "are all zero",
        ),
        (
            {"contrastive_temperature": 0.0},
            r"'contrastive_temperature' is 0.0; allowed: a number > 0",
        ),
    ],
)
def test_bad_contrastive_settings_are_refused_before_training(
    changes: dict[str, object], message: str, tmp_path: Path
) -> None:
    # A value outside its declared range is refused when the config is built, the others when
    # distill checks the combination: either way before anything is written.
    with pytest.raises(UserError, match=message):
        distill(_config(data=str(tmp_path / "no-data"), out=str(tmp_path / "run"), **changes))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- a real run


@pytest.mark.slow
@pytest.mark.parametrize("teacher_cache", [False, True], ids=["online", "cached"])
def test_contrastive_distillation_runs_and_checkpoints_projections(
    teacher_cache: bool, prepared_data: Path, tmp_path: Path
) -> None:
    # Untrained teachers saved with the data's tokenizer: the run needs their outputs, not skill.
    data = load_prepared(prepared_data)
    teachers = []
    for name in ("gpt2-tiny", "llama-tiny"):
        torch.manual_seed(0)
        build_model(get_spec(name), data.vocab_size).save_pretrained(tmp_path / name)
        load_tokenizer(data.tokenizer_dir).save_pretrained(tmp_path / name)
        teachers.append(str(tmp_path / name))
    run = tmp_path / "student"
    config = _config(
        data=str(prepared_data),
        out=str(run),
        teachers=teachers,
        batch_size=8,
        max_steps=8,
        lr=3e-3,
        warmup_steps=1,
        eval_chunks=9,  # the last validation batch holds one chunk: no negative, no error
        eval_batch_size=8,
        checkpoint_every=0,
        log_every=1,
        seed=11,
        teacher_cache=teacher_cache,
        cache_dir=str(tmp_path / "cache"),
    )
    result = distill(config)
    if teacher_cache:  # the ensemble and both teachers' representations of the chunks read
        meta = json.loads((tmp_path / "cache" / "meta.json").read_text(encoding="utf-8"))
        assert meta["representations"] == {"kind": "hidden", "widths": [128, 128],
                                           "dtype": "float32"}  # fmt: skip
    assert math.isfinite(result.best_val_ce)
    records = read_metrics(run)
    steps = [r for r in records if r["kind"] == "train"]
    assert {"ce", "kl", "contrastive", "loss"} <= set(steps[0])
    for record in steps:
        expected = 0.39 * record["ce"] + 0.39 * 4.0 * record["kl"] + 0.22 * record["contrastive"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert steps[-1]["contrastive"] < steps[0]["contrastive"]
    assert "contrastive" in [r for r in records if r["kind"] == "val"][-1]
    # The projections are trained and checkpointed with the student, never exported with it.
    state = torch.load(
        next((run / "checkpoints").iterdir()) / "state.pt", map_location="cpu", weights_only=False
    )
    assert set(state["objective"]) == {"projections.0.weight", "projections.1.weight"}
    assert not any("projection" in key for key in state["model"])
    exported = [p.name for p in result.model_dir.iterdir()]
    assert "config.json" in exported
