"""MATE-KD: the loss against a naive reference, the straight-through generator, the engine's rounds."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import one_process_context, torchrun_launcher
from transformers import AutoModelForMaskedLM

from tinyminds.data.chunks import load_prepared
from tinyminds.data.tokenizer import load_mlm_tokenizer, load_tokenizer
from tinyminds.errors import UserError
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training import checkpoint
from tinyminds.training.config import DistillConfig
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.base import Batch, causal_lm_cross_entropy
from tinyminds.training.objectives.distillation import DistillationObjective, distill
from tinyminds.training.objectives.kd_losses import (
    dense_kl,
    ensemble_log_probs,
    mate_loss,
    reduce_kl,
)
from tinyminds.training.objectives.mate import (
    MateObjective,
    draw_mask,
    gumbel_softmax_st,
    perturbed_embeddings,
)

VOCAB = 50

# ---------------------------------------------------------------------------- naive reference


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_norm = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_norm for x in row]


def naive_mate_loss(
    student: torch.Tensor,
    student_adv: torch.Tensor,
    teachers: list[torch.Tensor],
    teachers_adv: list[torch.Tensor],
    ids: list[list[int]],
    weights: tuple[float, float, float],
    temperature: float,
    reduction: str,
) -> float:
    """(w_ce CE + w_kd T^2 KL_orig + w_adv T^2 KL_adv) / sum(w), one position at a time.

    CE: next-token, last position excluded; KL(p_t || p_s) at temperature T over all positions, the
    teachers' logits averaged before the softmax; sequence reduction = sum / B, token = mean.
    """
    batch, length, vocab = student.shape

    def kl(s_logits: torch.Tensor, t_logits: list[torch.Tensor]) -> float:
        total = 0.0
        for b in range(batch):
            for t in range(length):
                mean = [
                    sum(float(x[b, t, v]) for x in t_logits) / len(t_logits) for v in range(vocab)
                ]
                log_t = _log_softmax([m / temperature for m in mean])
                log_s = _log_softmax([float(x) / temperature for x in s_logits[b, t]])
                total += sum(math.exp(p) * (p - q) for p, q in zip(log_t, log_s, strict=True))
        return total / batch if reduction == "sequence" else total / (batch * length)

    ce, count = 0.0, 0
    for b in range(batch):
        for t in range(length - 1):
            ce -= _log_softmax([float(x) for x in student[b, t]])[ids[b][t + 1]]
            count += 1
    ce /= count
    w_ce, w_kd, w_adv = weights
    kd = temperature**2 * (w_kd * kl(student, teachers) + w_adv * kl(student_adv, teachers_adv))
    return (w_ce * ce + kd) / (w_ce + w_kd + w_adv)


@pytest.mark.parametrize("reduction", ["sequence", "token"])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (2.0, 0.0, 0.5)])
def test_mate_loss_matches_naive_reference(
    reduction: str, weights: tuple[float, float, float]
) -> None:
    generator = torch.Generator().manual_seed(7)

    def logits() -> torch.Tensor:
        return torch.randn(2, 5, 7, generator=generator, dtype=torch.float64) * 2

    student, student_adv = logits(), logits()
    teachers, teachers_adv = [logits(), logits()], [logits(), logits()]
    ids = torch.randint(0, 7, (2, 5), generator=generator)
    temperature = 2.0

    def kl(s: torch.Tensor, t: list[torch.Tensor]) -> torch.Tensor:
        teacher = ensemble_log_probs(t, temperature)
        return reduce_kl(dense_kl(teacher, s, temperature), reduction)  # type: ignore[arg-type]

    got = mate_loss(
        causal_lm_cross_entropy(student, ids),
        kl(student, teachers),
        kl(student_adv, teachers_adv),
        weights,
        temperature,
    )
    expected = naive_mate_loss(
        student, student_adv, teachers, teachers_adv, ids.tolist(), weights, temperature, reduction
    )
    assert got.dtype == torch.float64
    # the KL terms are float64 here; the engine's CE is always computed in float32
    assert got.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="not all zero"):
        mate_loss(got, got, got, (0.0, 0.0, 0.0), temperature)


# ---------------------------------------------------------------------------- the pieces


def test_straight_through_sample_is_exactly_one_hot_with_the_soft_gradient() -> None:
    logits = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(6, 11, dtype=torch.float64)
    one_hot, tokens = gumbel_softmax_st(logits, 0.7, torch.Generator().manual_seed(3))
    assert torch.equal(one_hot.detach(), torch.nn.functional.one_hot(tokens, 11).float())
    (one_hot * weights).sum().backward()
    # The gradient is the soft sample's: redo it with the same noise.
    again = logits.detach().clone().requires_grad_(True)
    uniform = torch.rand(again.shape, generator=torch.Generator().manual_seed(3))
    soft = torch.softmax((again.float() - torch.log(-torch.log(uniform))) / 0.7, dim=-1)
    (soft * weights).sum().backward()
    assert logits.grad is not None and again.grad is not None
    torch.testing.assert_close(logits.grad, again.grad)
    assert logits.grad.abs().sum() > 0


def test_mask_skips_padding_and_hits_the_fraction() -> None:
    ids = torch.randint(1, 100, (64, 128))
    ids[:, 100:] = 0
    mask = draw_mask(ids, 0.3, 0, torch.Generator().manual_seed(0))
    assert not mask[:, 100:].any()
    assert mask[:, :100].float().mean().item() == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_unmasked_positions_keep_the_exact_embeddings(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(get_spec(name), VOCAB)
    embedding = model.get_input_embeddings()
    ids = torch.randint(0, VOCAB, (3, 16))
    mask = draw_mask(ids, 0.3, 0, torch.Generator().manual_seed(1))
    logits = torch.randn(int(mask.sum()), VOCAB, requires_grad=True)
    one_hot, tokens = gumbel_softmax_st(logits, 1.0)
    embeds = perturbed_embeddings(embedding, ids, mask, one_hot)
    original = embedding(ids)
    assert torch.equal(embeds[~mask], original[~mask])
    assert torch.equal(embeds[mask], embedding(tokens))  # the hard one-hot picks the row exactly
    # and the model reads them as it reads token ids
    perturbed_ids = ids.masked_scatter(mask, tokens)
    with torch.no_grad():
        torch.testing.assert_close(
            model(inputs_embeds=embeds).logits, model(input_ids=perturbed_ids).logits
        )
    embeds.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- the objective


def _config(**changes: object) -> DistillConfig:
    values: dict[str, object] = {
        "model": "llama-tiny",
        "teachers": ["a", "b"],
        "objective": "mate",
        "generator": "g",
        "teacher_cache": False,
        "generator_lr": 1e-3,
        **changes,
    }
    return DistillConfig(**values)  # type: ignore[arg-type]


def _objective(config: DistillConfig) -> tuple[MateObjective, torch.nn.Module]:
    """(objective with random tiny teachers and generator, random tiny student), set up on the CPU."""
    torch.manual_seed(0)
    teachers = [
        build_model(get_spec(name), VOCAB).eval().requires_grad_(False)
        for name in ("gpt2-tiny", "llama-tiny")
    ]
    generator = build_model(get_spec("electra-tiny"), VOCAB + 1)
    objective = MateObjective(DistillationObjective(teachers, ["a", "b"], config), generator)
    objective.setup(one_process_context())
    return objective, build_model(get_spec(config.model), VOCAB)


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_generator_gets_a_gradient_through_teachers_and_student() -> None:
    objective, student = _objective(_config())
    ids = torch.randint(3, VOCAB, (4, 16))
    divergence, changed = objective.generator_divergence(
        student, Batch(ids, torch.arange(4), "train")
    )
    assert divergence.item() > 0 and 0 <= changed.item() <= 1
    (-divergence).backward(inputs=objective.params)
    grads = {n: p.grad for n, p in objective.generator.named_parameters()}
    assert all(g is not None for g in grads.values())
    # the sample's gradient reaches the output head and, through it, the encoder
    assert grads["generator_lm_head.weight"].abs().sum() > 0  # type: ignore[union-attr]
    assert grads["electra.embeddings.word_embeddings.weight"].abs().sum() > 0  # type: ignore[union-attr]
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is None for t in objective.kd.teachers for p in t.parameters())


def test_each_step_moves_only_its_own_model() -> None:
    objective, student = _objective(_config())
    ids = torch.randint(3, VOCAB, (4, 16))
    batch = Batch(ids, torch.arange(4), "train")
    student_before, generator_before = _snapshot(student), _snapshot(objective.generator)
    teachers_before = [_snapshot(t) for t in objective.kd.teachers]

    values = objective.side_step(student, [batch, batch])  # a generator step (2 micro-batches)
    assert set(values) == {"kd_adv", "changed", "grad_norm"} and values["grad_norm"] > 0
    assert _same(student, student_before)
    assert all(p.grad is None for p in student.parameters())
    assert not _same(objective.generator, generator_before)

    generator_before = _snapshot(objective.generator)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    output = objective(student, batch)  # a student step
    output.loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in objective.generator.parameters())
    assert _same(objective.generator, generator_before)
    assert not _same(student, student_before)
    assert all(_same(t, b) for t, b in zip(objective.kd.teachers, teachers_before, strict=True))
    # rounds: 10 generator steps before student steps 0, 100, 200, ...
    assert [objective.side_steps_before(s) for s in (0, 1, 99, 100, 250)] == [10, 0, 0, 10, 0]


def test_student_loss_equals_reference_on_the_perturbed_batch() -> None:
    objective, student = _objective(_config(mate_ce_weight=2.0, mate_adv_weight=0.5))
    ids = torch.randint(3, VOCAB, (4, 32))
    batch = Batch(ids, torch.arange(20, 24), "dev")  # dev: a fixed perturbation, repeatable
    with torch.no_grad():
        output = objective(student, batch)
        perturbed, mask = objective.perturb(batch)
        assert torch.equal(perturbed[~mask], ids[~mask]) and mask.any()
        assert not torch.equal(perturbed, ids)

        def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            return model(input_ids=x).logits.double()

        def kl(x: torch.Tensor) -> torch.Tensor:
            teacher = ensemble_log_probs([logits(t, x) for t in objective.kd.teachers], 2.0)
            return reduce_kl(dense_kl(teacher, logits(student, x), 2.0), "sequence")

        ce = causal_lm_cross_entropy(logits(student, ids), ids)
        expected = (2.0 * ce + 4.0 * kl(ids) + 0.5 * 4.0 * kl(perturbed)) / 3.5
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert output.metrics["kd_orig"].item() == pytest.approx(4.0 * kl(ids).item(), rel=1e-5)
    assert output.metrics["kd_adv"].item() == pytest.approx(4.0 * kl(perturbed).item(), rel=1e-5)


# ---------------------------------------------------------------------------- refused settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generator": ""}, "objective=mate needs generator=FOLDER"),
        ({"generator_steps": 0}, "generator_steps=0; generator and student steps"),
        ({"student_steps": -3}, r"'student_steps' is -3; allowed: an integer >= 1"),
        ({"mate_adv_weight": -1.0}, r"'mate_adv_weight' is -1.0; allowed: a number >= 0"),
        (
            {"mate_ce_weight": 0.0, "mate_kd_weight": 0.0, "mate_adv_weight": 0.0},
            "are all zero",
        ),
        ({"mask_fraction": 0.0}, r"\'mask_fraction\' is 0.0; allowed: a number in \(0, 1\]"),
        ({"gumbel_tau": 0.0}, r"'gumbel_tau' is 0.0; allowed: a number > 0"),
        ({"generator_lr": -1e-5}, r"'generator_lr' is -1e-05; allowed: a number >= 0"),
    ],
)
def test_bad_mate_settings_are_refused_before_training(
    changes: dict[str, object], message: str, tmp_path: Path
) -> None:
    # A value outside its declared range is refused when the config is built, the others when
    # distill checks the combination: either way before anything is written.
    with pytest.raises(UserError, match=message):
        distill(_config(data=str(tmp_path / "no-data"), out=str(tmp_path / "run"), **changes))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_models(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Untrained tiny teachers and generator saved with the data's tokenizers: runs need their
    outputs, not their skill."""
    data = load_prepared(prepared_data)
    root = tmp_path_factory.mktemp("mate-models")
    folders = {}
    for name, vocab, tokenizer in (
        ("gpt2-tiny", data.vocab_size, load_tokenizer),
        ("llama-tiny", data.vocab_size, load_tokenizer),
        ("electra-tiny", data.vocab_size + 1, load_mlm_tokenizer),
    ):
        torch.manual_seed(0)
        build_model(get_spec(name), vocab).save_pretrained(root / name)
        tokenizer(data.tokenizer_dir).save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def _run_config(
    prepared_data: Path, out: Path, models: dict[str, str], **changes: object
) -> DistillConfig:
    return _config(
        data=str(prepared_data),
        out=str(out),
        teachers=[models["gpt2-tiny"], models["llama-tiny"]],
        **{
            "generator": models["electra-tiny"],
            "batch_size": 8,
            "max_steps": 6,
            "generator_steps": 2,
            "student_steps": 2,
            "lr": 3e-3,
            "warmup_steps": 1,
            "eval_chunks": 16,
            "eval_batch_size": 8,
            "checkpoint_every": 3,
            "keep_checkpoints": 5,
            "log_every": 1,
            "seed": 3,
            **changes,
        },
    )


def test_generator_with_another_vocabulary_is_refused(
    prepared_data: Path, tiny_models: dict[str, str], tmp_path: Path
) -> None:
    data = load_prepared(prepared_data)
    wrong = tmp_path / "electra-no-mask"
    build_model(get_spec("electra-tiny"), data.vocab_size).save_pretrained(wrong)
    load_tokenizer(data.tokenizer_dir).save_pretrained(wrong)
    config = _run_config(prepared_data, tmp_path / "run", tiny_models, generator=str(wrong))
    with pytest.raises(UserError) as error:
        distill(config)
    message = str(error.value)
    assert f"generator {wrong} has a vocabulary of {data.vocab_size} tokens" in message
    assert f"student llama-tiny and the teachers have {data.vocab_size}" in message
    assert f"must have {data.vocab_size + 1}" in message and "[MASK]" in message
    # a causal LM is not a generator
    causal = _run_config(
        prepared_data, tmp_path / "run", tiny_models, generator=tiny_models["gpt2-tiny"]
    )
    with pytest.raises(UserError, match="is not a masked language model"):
        distill(causal)


# ---------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_mate_distillation_logs_checkpoints_and_resumes_exactly(
    prepared_data: Path, tiny_models: dict[str, str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = _run_config(prepared_data, run, tiny_models)
    result = distill(config)
    assert result.steps == 6 and math.isfinite(result.best_val_ce)
    records = read_metrics(run)
    train = [r for r in records if r["kind"] == "train"]
    generator = [r for r in records if r["kind"] == "generator"]
    # rounds before student steps 1, 3, 5 (2 generator steps each); 6 student steps in all
    assert [r["step"] for r in generator] == [1, 1, 3, 3, 5, 5]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for record in train:
        assert record["loss"] == pytest.approx(
            (record["ce"] + record["kd_orig"] + record["kd_adv"]) / 3, rel=1e-5
        )
        assert record["kd_orig"] == pytest.approx(4.0 * record["kl"], rel=1e-5)
    assert all(r["kd_adv"] > 0 and r["grad_norm"] > 0 for r in generator)
    assert {"kd_adv", "kd_orig"} <= set(next(r for r in records if r["kind"] == "val"))
    # The generator is trained and checkpointed beside the student, never exported with it.
    final = checkpoint.checkpoint_folders(run / "checkpoints")[-1]
    state = torch.load(final / "state.pt", map_location="cpu", weights_only=False)
    initial = AutoModelForMaskedLM.from_pretrained(tiny_models["electra-tiny"]).state_dict()
    assert any(not torch.equal(state["side"]["generator"][k], v) for k, v in initial.items())
    assert state["side"]["optimizer"]["state"]
    assert not any("generator" in k for k in state["model"])

    # Resume from step 3 (mid-round): the same records and the same final weights, both models.
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    shutil.rmtree(final)
    resumed = distill(config, resume=True)
    assert resumed.steps == 6

    def stable(path: Path) -> list[dict[str, object]]:
        return [
            {k: v for k, v in r.items() if k != "tokens_per_s"}
            for r in read_metrics(path)
            if r["kind"] != "val"
        ]

    assert stable(run) == stable(reference)
    again = torch.load(
        checkpoint.checkpoint_folders(run / "checkpoints")[-1] / "state.pt",
        map_location="cpu",
        weights_only=False,
    )
    for key, value in state["model"].items():
        assert torch.equal(again["model"][key], value), key
    for key, value in state["side"]["generator"].items():
        assert torch.equal(again["side"]["generator"][key], value), key


def _distill_under_torchrun(recipe: str, out: Path, *settings: str) -> None:
    """`tinyminds distill RECIPE` through torch.distributed.run with two gloo processes."""
    command = [
        *torchrun_launcher(),
        "-m",
        "tinyminds",
        "distill",
        recipe,
        f"out={out}",
        *settings,
        "batch_size=8",
        "eval_chunks=16",
        "log_every=1",
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_mate_tiny_recipe_runs_under_torch_distributed(
    prepared_data: Path, tiny_models: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    _distill_under_torchrun(
        "mate-tiny",
        out,
        f"data={prepared_data}",
        f"teachers=[{tiny_models['gpt2-tiny']},{tiny_models['llama-tiny']}]",
        f"generator={tiny_models['electra-tiny']}",
        "max_steps=3",
        "student_steps=2",
    )
    records = read_metrics(out)
    assert [r["step"] for r in records if r["kind"] == "generator"] == [1, 1, 3, 3]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


@pytest.mark.slow
def test_contrastive_tiny_recipe_runs_under_torch_distributed(
    prepared_data: Path, tiny_models: dict[str, str], tmp_path: Path
) -> None:
    """contrastive-tiny under torchrun: each of the two processes contrasts its own 4 chunks and the
    engine averages the projections' gradients with the student's."""
    out = tmp_path / "ddp"
    _distill_under_torchrun(
        "contrastive-tiny",
        out,
        f"data={prepared_data}",
        f"teachers=[{tiny_models['gpt2-tiny']},{tiny_models['llama-tiny']}]",
        "max_steps=2",
    )
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["contrastive"] > 0 for r in train)
