"""The divergences against naive float64 references (values and gradients), the caches that serve
them, TAID's schedule, and short distillation runs with each (TAID resumed bit for bit)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinyminds.errors import UserError
from tinyminds.training.config import DistillConfig, TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.distillation import distill
from tinyminds.training.objectives.divergences import (
    DIVERGENCES,
    DivergenceSpec,
    TaidSchedule,
    bucket_log_probs,
    cache_refusal,
    divergence,
    sampled_divergence,
)

V = 7


def naive(p: list[float], q: list[float], spec: DivergenceSpec, t: float | None = None) -> float:
    """Each divergence written out term by term in Python floats (float64)."""

    def kl(a: list[float], b: list[float]) -> float:
        return sum(x * (math.log(x) - math.log(y)) for x, y in zip(a, b, strict=True) if x > 0)

    def mix(a: list[float], b: list[float], w: float) -> list[float]:
        return [w * x + (1 - w) * y for x, y in zip(a, b, strict=True)]

    if spec.name == "forward_kl":
        return kl(p, q)
    if spec.name == "reverse_kl":
        return kl(q, p)
    if spec.name == "skew_kl":
        return kl(p, mix(p, q, spec.skew_alpha))
    if spec.name == "skew_reverse_kl":
        return kl(q, mix(q, p, spec.skew_alpha))
    if spec.name == "jsd":
        m = mix(p, q, spec.jsd_beta)
        return spec.jsd_beta * kl(p, m) + (1 - spec.jsd_beta) * kl(q, m)
    assert t is not None
    logits = [(1 - t) * math.log(y) + t * math.log(x) for x, y in zip(p, q, strict=True)]
    top = max(logits)
    weights = [math.exp(z - top) for z in logits]
    target = [w / sum(weights) for w in weights]
    return kl(target, q)


SPECS = [
    DivergenceSpec("forward_kl"),
    DivergenceSpec("reverse_kl"),
    DivergenceSpec("skew_kl", skew_alpha=0.1),
    DivergenceSpec("skew_kl", skew_alpha=0.6),
    DivergenceSpec("skew_reverse_kl", skew_alpha=0.1),
    DivergenceSpec("jsd", jsd_beta=0.5),
    DivergenceSpec("jsd", jsd_beta=0.1),
    DivergenceSpec("taid"),
]


def _pair(seed: int, rows: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(rows, V, generator=generator, dtype=torch.float64) * 2
    student = torch.randn(rows, V, generator=generator, dtype=torch.float64) * 2
    return torch.log_softmax(teacher, -1), torch.log_softmax(student, -1)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.skew_alpha}-{s.jsd_beta}")
def test_each_divergence_matches_its_naive_reference(spec: DivergenceSpec) -> None:
    log_p, log_q = _pair(1)
    got = divergence(log_p, log_q, spec, taid_t=0.4)
    for row in range(log_p.shape[0]):
        p, q = log_p[row].exp().tolist(), log_q[row].exp().tolist()
        assert got[row].item() == pytest.approx(naive(p, q, spec, 0.4), rel=1e-12, abs=1e-14)
    assert (got >= -1e-12).all()  # divergences are never negative
    same = divergence(log_p, log_p, spec, taid_t=0.4)
    assert same.abs().max().item() < 1e-12  # and zero when the student is the teacher


@pytest.mark.parametrize("spec", SPECS[:-1], ids=lambda s: f"{s.name}-{s.skew_alpha}-{s.jsd_beta}")
def test_gradients_with_respect_to_the_student_logits(spec: DivergenceSpec) -> None:
    log_p, _ = _pair(2)
    logits = torch.randn(3, V, dtype=torch.float64, requires_grad=True)

    def value(z: torch.Tensor) -> torch.Tensor:
        return divergence(log_p, torch.log_softmax(z, -1), spec).sum()

    assert torch.autograd.gradcheck(value, (logits,))


def test_taid_gradient_is_q_minus_the_interpolated_target() -> None:
    log_p, _ = _pair(3)
    logits = torch.randn(3, V, dtype=torch.float64, requires_grad=True)
    temperature, t = 2.0, 0.55
    log_q = torch.log_softmax(logits / temperature, -1)
    divergence(log_p, log_q, DivergenceSpec("taid"), taid_t=t).sum().backward()
    q = log_q.detach().exp()
    target = torch.softmax((1 - t) * log_q.detach() + t * log_p, -1)
    torch.testing.assert_close(logits.grad, (q - target) / temperature, rtol=1e-10, atol=1e-12)


def test_limits_and_symmetries() -> None:
    log_p, log_q = _pair(4)
    forward = divergence(log_p, log_q, DivergenceSpec("forward_kl"))
    reverse = divergence(log_p, log_q, DivergenceSpec("reverse_kl"))
    torch.testing.assert_close(divergence(log_p, log_q, DivergenceSpec("skew_kl", 0.0)), forward)
    skew_reverse = DivergenceSpec("skew_reverse_kl", skew_alpha=0.0)
    torch.testing.assert_close(divergence(log_p, log_q, skew_reverse), reverse)
    half = DivergenceSpec("jsd", jsd_beta=0.5)
    torch.testing.assert_close(divergence(log_p, log_q, half), divergence(log_q, log_p, half))
    # Small b is forward-KL-like (value / b -> KL(p||q)), b near 1 reverse-KL-like.
    small = divergence(log_p, log_q, DivergenceSpec("jsd", jsd_beta=1e-6)) / 1e-6
    large = divergence(log_p, log_q, DivergenceSpec("jsd", jsd_beta=1 - 1e-6)) / 1e-6
    torch.testing.assert_close(small, forward, rtol=1e-4, atol=0)
    torch.testing.assert_close(large, reverse, rtol=1e-4, atol=0)
    # TAID at t = 1 is the forward KL; at t = 0 its target is the student: zero.
    taid = DivergenceSpec("taid")
    torch.testing.assert_close(divergence(log_p, log_q, taid, taid_t=1.0), forward)
    assert divergence(log_p, log_q, taid, taid_t=0.0).abs().max().item() < 1e-12


def test_the_sampled_estimates_are_unbiased() -> None:
    log_p, log_q = _pair(5, rows=1)
    draws = torch.multinomial(log_p.exp(), 200_000, replacement=True, generator=torch.Generator())
    for spec in (DivergenceSpec("forward_kl"), DivergenceSpec("skew_kl", skew_alpha=0.3)):
        estimate = sampled_divergence(log_p.gather(-1, draws), log_q.gather(-1, draws), spec)
        exact = divergence(log_p, log_q, spec)
        assert estimate.item() == pytest.approx(exact.item(), rel=0.02)
    with pytest.raises(ValueError, match="jsd cannot be estimated from draws"):
        sampled_divergence(log_p, log_q, DivergenceSpec("jsd"))


def test_buckets_with_every_token_are_the_dense_divergence() -> None:
    log_p, _ = _pair(6)
    logits = torch.randn(3, V, dtype=torch.float64)
    temperature = 2.0
    order = torch.argsort(log_p, dim=-1, descending=True)
    rest = torch.full((3,), float("-inf"), dtype=torch.float64)
    teacher, student = bucket_log_probs(order, log_p.gather(-1, order), rest, logits, temperature)
    assert teacher.shape == (3, V + 1) and torch.isneginf(student[:, -1]).all()
    dense_q = torch.log_softmax(logits / temperature, -1)
    for spec in SPECS[:-1]:
        torch.testing.assert_close(
            divergence(teacher, student, spec),
            divergence(log_p, dense_q, spec),
            rtol=1e-10,
            atol=1e-12,
        )
    # k < V: the rest bucket holds the mass of the other tokens on both sides.
    top = order[:, :3]
    kept = log_p.gather(-1, top)
    teacher, student = bucket_log_probs(top, kept, torch.log1p(-kept.exp().sum(-1)), logits, 2.0)
    torch.testing.assert_close(teacher.exp().sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(student.exp().sum(-1), torch.ones(3, dtype=torch.float64))


def test_which_caches_serve_which_divergence() -> None:
    for name in DIVERGENCES:
        assert cache_refusal(name, "topk", "bucket") is None
        served = name in ("forward_kl", "skew_kl")
        assert (cache_refusal(name, "sample", "bucket") is None) == served
    assert "holds them only at tokens drawn" in (cache_refusal("jsd", "sample", "bucket") or "")
    assert "hybrid cache serves forward_kl only" in (
        cache_refusal("skew_kl", "hybrid", "bucket") or ""
    )
    assert "cache_tail=uniform is defined for forward_kl only" in (
        cache_refusal("taid", "topk", "uniform") or ""
    )


def test_taid_schedule_rises_by_its_rule_and_round_trips() -> None:
    schedule = TaidSchedule(0.4, 1.0, momentum=0.5, step=0.1)
    schedule.update(2.0, 0.1)  # the first call only records the loss
    assert schedule.t == 0.4 and schedule.previous == 2.0
    schedule.update(1.0, 0.2)  # r = 0.5, m = 0.25, adaptive = 0.1 * sigmoid(0.25) * 0.6
    adaptive = 0.1 * (1 / (1 + math.exp(-0.25))) * 0.6
    assert schedule.t == pytest.approx(max(0.4 + 0.6 * 0.2, 0.4 + adaptive))
    saved = schedule.state_dict()
    schedule.update(1.5, 0.9)  # a worse loss: the linear schedule still pulls t up
    assert schedule.t == pytest.approx(0.4 + 0.6 * 0.9)
    again = TaidSchedule(0.4, 1.0, momentum=0.5, step=0.1)
    again.load_state_dict(saved)
    again.update(1.5, 0.9)
    assert again.t == schedule.t and again.velocity == schedule.velocity
    with pytest.raises(ValueError, match="t_start < t_end"):
        TaidSchedule(0.9, 0.5, 0.99, 5e-4)


def _config(**changes: object) -> DistillConfig:
    return DistillConfig(model="gpt2-tiny", teachers=["a", "b"], **changes)  # type: ignore[arg-type]


def test_bad_divergence_settings_are_one_line() -> None:
    from tinyminds.training.objectives.distillation import check_distill_config

    with pytest.raises(UserError, match="holds them only at tokens drawn"):
        check_distill_config(_config(divergence="jsd", cache_selection="sample"))
    with pytest.raises(UserError, match="older spelling of divergence=reverse_kl"):
        check_distill_config(_config(divergence="jsd", kl_direction="reverse"))
    with pytest.raises(UserError, match="divergence=taid is available with objective=kd"):
        check_distill_config(
            _config(divergence="taid", objective="contrastive", teacher_cache=False)
        )
    with pytest.raises(UserError, match=r"taid_t_start .* must be below taid_t_end"):
        check_distill_config(_config(divergence="taid", taid_t_start=0.5, taid_t_end=0.5))
    with pytest.raises(UserError, match="jsd_beta"):
        _config(jsd_beta=1.0)
    with pytest.raises(UserError, match="skew_alpha"):
        _config(skew_alpha=-0.1)


# --- short runs on the Shakespeare fixture ------------------------------------------------------

TEACHER = {"batch_size": 32, "epochs": 1, "max_steps": 20, "lr": 3e-3, "warmup_steps": 5,
           "eval_chunks": 64, "checkpoint_every": 0, "log_every": 5}  # fmt: skip
STUDENT = {"model": "gpt2-tiny", "batch_size": 16, "epochs": 1, "max_steps": 16, "lr": 3e-3,
           "warmup_steps": 4, "eval_chunks": 64, "log_every": 2, "seed": 3}  # fmt: skip


@pytest.fixture(scope="module")
def teachers(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("div-teachers")
    return [
        str(
            train(
                TrainConfig(model=name, data=str(prepared_data), out=str(root / name), **TEACHER)
            ).model_dir
        )  # type: ignore[arg-type]
        for name in ("gpt2-tiny", "llama-tiny")
    ]


def _student(data: Path, out: Path, teachers: list[str], **changes: object) -> DistillConfig:
    values = {**STUDENT, "data": str(data), "out": str(out), "teachers": teachers, **changes}
    return DistillConfig(**values)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"divergence": "jsd", "teacher_cache": False},
        {"divergence": "skew_reverse_kl", "cache_selection": "topk", "cache_k": 16},
        {"divergence": "skew_kl"},  # the default sampled cache
    ],
    ids=["jsd-online", "skew-reverse-topk", "skew-sampled"],
)
def test_distillation_trains_with_each_kind_of_teacher_source(
    changes: dict, teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    distill(_student(prepared_data, tmp_path / "run", teachers, **changes))
    records = read_metrics(tmp_path / "run")
    train_records = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"][-1]
    assert {"ce", "div"} <= set(train_records[0]) and {"ce", "kl", "div"} <= set(val)
    assert train_records[-1]["div"] < train_records[0]["div"]  # the student moves to the teachers


@pytest.mark.slow
def test_a_taid_run_killed_with_sigkill_resumes_bit_for_bit(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    # Both runs in subprocesses with one thread each, so that they compute alike.
    overrides = [
        f"data={prepared_data}", f"teachers={','.join(teachers)}", "model=gpt2-tiny",
        "divergence=taid", "taid_step=0.05", "cache_selection=topk", "cache_k=16",
        f"cache_dir={tmp_path / 'cache'}", "batch_size=16", "max_steps=30", "lr=3e-3",
        "warmup_steps=4", "eval_chunks=64", "log_every=1", "checkpoint_every=5", "seed=3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tinyminds",
            "distill",
            "distill-tiny",
            *overrides,
            f"out={out}",
            "-q",
        ]

    reference = tmp_path / "reference"
    done = subprocess.run(command(reference), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    def train_records(out: Path) -> list[dict]:
        """The training records by step (a resumed run logs again the steps after its checkpoint)."""
        if not (out / "metrics.jsonl").is_file():
            return []
        by_step = {r["step"]: r for r in read_metrics(out) if r["kind"] == "train"}
        return [by_step[step] for step in sorted(by_step)]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    # Past the checkpoint of step 5 and well before the end (30 steps): kill -9.
    while time.monotonic() < deadline and len(train_records(killed)) < 7:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(train_records(killed)) < 30  # it died before the end
    resumed = subprocess.run([*command(killed), "--resume"], capture_output=True, text=True,
                             env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    want, got = train_records(reference), train_records(killed)
    ts = [r["taid_t"] for r in want]
    assert ts[0] == pytest.approx(0.4) and ts[-1] > ts[0] and ts == sorted(ts)
    # t, the losses and the weights continue exactly where the checkpoint left them.
    assert [r["taid_t"] for r in got] == ts
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    weights = "model/model.safetensors"
    assert (killed / weights).read_bytes() == (reference / weights).read_bytes()
