"""KD losses against naive reference formulas (float64, plain Python, one position at a time)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tinyminds.training.objectives.base import causal_lm_cross_entropy, next_token_labels
from tinyminds.training.objectives.kd_losses import (
    cached_kd_loss,
    chunked_dense_kl,
    chunked_ensemble_kl,
    chunked_hybrid_kl,
    chunked_sparse_kl,
    dense_kl,
    ensemble_log_probs,
    kd_loss,
    reduce_kl,
    sparse_kl,
)
from tinyminds.training.teacher_cache import hybrid_buckets, top_k_buckets

B, L, V = 2, 5, 11
RTOL = 1e-6

Nested = list[list[list[float]]]


# ---------------------------------------------------------------------------- naive references


def rows(t: torch.Tensor) -> Nested:
    """A [B, L, V] tensor as nested Python floats."""
    return [[[float(x) for x in t[b, i]] for i in range(t.shape[1])] for b in range(t.shape[0])]


def naive_log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_norm = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_norm for x in row]


def naive_ensemble(
    teachers: list[torch.Tensor], temperature: float, weights: list[float] | None, mode: str
) -> Nested:
    w = [1.0] * len(teachers) if weights is None else list(weights)
    w = [x / sum(w) for x in w]
    data = [rows(t) for t in teachers]
    out: Nested = []
    for b in range(B):
        out.append([])
        for i in range(L):
            if mode == "logits":
                mixed = [
                    sum(w[n] * data[n][b][i][v] for n in range(len(teachers))) / temperature
                    for v in range(V)
                ]
                out[b].append(naive_log_softmax(mixed))
            else:
                probs = [0.0] * V
                for n in range(len(teachers)):
                    lp = naive_log_softmax([x / temperature for x in data[n][b][i]])
                    for v in range(V):
                        probs[v] += w[n] * math.exp(lp[v])
                out[b].append([math.log(p) for p in probs])
    return out


def naive_kl_row(log_p: list[float], log_q: list[float]) -> float:
    """sum_v p_v (log p_v - log q_v), with 0 log 0 = 0."""
    return sum(math.exp(a) * (a - c) for a, c in zip(log_p, log_q, strict=True) if a != -math.inf)


def naive_dense_kl(teacher_lp: Nested, student: torch.Tensor, temperature: float, direction: str):
    s = rows(student)
    out = []
    for b in range(B):
        out.append([])
        for i in range(L):
            log_s = naive_log_softmax([x / temperature for x in s[b][i]])
            log_t = teacher_lp[b][i]
            kl = (
                naive_kl_row(log_t, log_s) if direction == "forward" else naive_kl_row(log_s, log_t)
            )
            out[b].append(kl)
    return torch.tensor(out, dtype=torch.float64)


def naive_sparse_kl(
    teacher_lp: Nested, k: int, student: torch.Tensor, temperature: float, direction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-k cache of ``teacher_lp`` and the naive KL over its k + 1 buckets."""
    s = rows(student)
    indices, top_lp, rest_lp, out = [], [], [], []
    for b in range(B):
        indices.append([])
        top_lp.append([])
        rest_lp.append([])
        out.append([])
        for i in range(L):
            log_t = teacher_lp[b][i]
            top = sorted(range(V), key=lambda v: -log_t[v])[:k]
            rest_t = 1.0 - sum(math.exp(log_t[v]) for v in top)
            log_rest_t = math.log(rest_t) if k < V else -math.inf
            probs_s = [math.exp(x) for x in naive_log_softmax([x / temperature for x in s[b][i]])]
            rest_s = sum(probs_s[v] for v in range(V) if v not in top)
            log_rest_s = math.log(rest_s) if k < V else -math.inf
            teacher_buckets = [log_t[v] for v in top] + [log_rest_t]
            student_buckets = [math.log(probs_s[v]) for v in top] + [log_rest_s]
            if direction == "forward":
                kl = naive_kl_row(teacher_buckets, student_buckets)
            else:
                kl = naive_kl_row(student_buckets, teacher_buckets)
            indices[b].append(top)
            top_lp[b].append([log_t[v] for v in top])
            rest_lp[b].append(log_rest_t)
            out[b].append(kl)
    return (
        torch.tensor(indices, dtype=torch.int64),
        torch.tensor(top_lp, dtype=torch.float64),
        torch.tensor(rest_lp, dtype=torch.float64),
        torch.tensor(out, dtype=torch.float64),
    )


def naive_next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> float:
    data = rows(logits)
    total, count = 0.0, 0
    for b in range(B):
        for i in range(L - 1):
            total -= naive_log_softmax(data[b][i])[int(ids[b, i + 1])]
            count += 1
    return total / count


def assert_gradient_matches_finite_differences(
    objective: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor, eps: float = 1e-6
) -> None:
    """Autograd's gradient of a scalar ``objective`` at ``point`` against central differences."""
    leaf = point.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(leaf), leaf)
    numeric = torch.zeros_like(point)
    for index in range(point.numel()):
        plus, minus = point.clone(), point.clone()
        plus.view(-1)[index] += eps
        minus.view(-1)[index] -= eps
        numeric.view(-1)[index] = (objective(plus) - objective(minus)) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------- fixtures


def make_logits(seed: int, n: int = 1, scale: float = 3.0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, L, V, generator=gen, dtype=torch.float64) * scale for _ in range(n)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=rtol * 1e-2)


# ------------------------------------------------------------------------------------- ensemble


@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3], [2.0, 0.0, 1.0]])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_ensemble_matches_naive(mode: str, weights: list[float] | None, temperature: float):
    teachers = make_logits(0, n=3)
    got = ensemble_log_probs(teachers, temperature, weights, mode)  # type: ignore[arg-type]
    assert got.dtype == torch.float64 and got.shape == (B, L, V)
    expected = torch.tensor(naive_ensemble(teachers, temperature, weights, mode))
    assert_close(got, expected)


def test_ensemble_computes_in_float32_for_low_precision_teachers():
    teachers = [t.to(torch.bfloat16) for t in make_logits(1, n=2)]
    got = ensemble_log_probs(teachers, 2.0)
    assert got.dtype == torch.float32
    expected = torch.tensor(naive_ensemble([t.double() for t in teachers], 2.0, None, "logits"))
    assert_close(got, expected, rtol=1e-5)


def test_ensemble_of_one_teacher_is_its_softmax():
    (teacher,) = make_logits(2)
    for mode in ("logits", "probs"):
        got = ensemble_log_probs([teacher], 2.0, mode=mode)  # type: ignore[arg-type]
        assert_close(got, torch.log_softmax(teacher / 2.0, dim=-1))


@pytest.mark.parametrize(
    ("teachers", "weights", "message"),
    [
        ([], None, "at least one"),
        ([torch.zeros(B, L, V)] * 2, [1.0], "2 teachers"),
        ([torch.zeros(B, L, V)] * 2, [1.0, -0.5], "non-negative"),
        ([torch.zeros(B, L, V)] * 2, [0.0, 0.0], "all be zero"),
        ([torch.zeros(B, L, V)] * 2, [1.0, float("nan")], "finite"),
        ([torch.zeros(B, L, V), torch.zeros(B, L, V + 1)], None, "shape"),
    ],
)
def test_ensemble_validation(teachers: list[torch.Tensor], weights, message: str):
    with pytest.raises(ValueError, match=message):
        ensemble_log_probs(teachers, 2.0, weights)


def test_bad_options_raise():
    t = torch.zeros(B, L, V)
    with pytest.raises(ValueError, match="mode"):
        ensemble_log_probs([t], 2.0, mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        ensemble_log_probs([t], 0.0)
    with pytest.raises(ValueError, match="direction"):
        dense_kl(t, t, 2.0, direction="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        dense_kl(t, torch.zeros(B, L, V + 1), 2.0)
    with pytest.raises(ValueError, match="reduction"):
        reduce_kl(torch.zeros(B, L), "batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(torch.tensor(1.0), torch.tensor(1.0), 1.5, 2.0)
    with pytest.raises(ValueError, match="chunk_rows"):
        chunked_dense_kl(t, t, 2.0, chunk_rows=0)


# ------------------------------------------------------------------------------------- dense KL


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("mode", ["logits", "probs"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dense_kl_matches_naive(direction: str, mode: str, temperature: float):
    *teachers, student = make_logits(3, n=3)
    teacher_lp = ensemble_log_probs(teachers, temperature, mode=mode)  # type: ignore[arg-type]
    got = dense_kl(teacher_lp, student, temperature, direction)  # type: ignore[arg-type]
    assert got.shape == (B, L) and got.dtype == torch.float64
    expected = naive_dense_kl(rows(teacher_lp), student, temperature, direction)
    assert_close(got, expected)
    assert (got >= 0).all()


def test_dense_kl_is_float32_for_float32_and_bf16_inputs():
    teacher, student = make_logits(4, n=2)
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    expected = naive_dense_kl(rows(teacher_lp.float().double()), student.float(), 2.0, "forward")
    got = dense_kl(teacher_lp.float(), student.float(), 2.0)
    assert got.dtype == torch.float32
    assert_close(got, expected, rtol=1e-5)
    assert dense_kl(teacher_lp.bfloat16(), student.bfloat16(), 2.0).dtype == torch.float32


def test_dense_kl_is_zero_for_identical_distributions_and_handles_zero_probabilities():
    (student,) = make_logits(5)
    teacher_lp = torch.log_softmax(student / 2.0, dim=-1)
    assert_close(dense_kl(teacher_lp, student, 2.0), torch.zeros(B, L))
    # A teacher with exact zeros: 0 log 0 = 0 forward (finite, with finite gradients).
    teacher_lp = teacher_lp.clone()
    teacher_lp[..., :3] = -math.inf
    teacher_lp = torch.log_softmax(teacher_lp, dim=-1)
    student = student.clone().requires_grad_(True)
    kl = dense_kl(teacher_lp, student, 2.0)
    assert torch.isfinite(kl).all()
    (grad,) = torch.autograd.grad(kl.sum(), student)
    assert torch.isfinite(grad).all()
    assert_close(kl, naive_dense_kl(rows(teacher_lp), student.detach(), 2.0, "forward"))


# ------------------------------------------------------------------------------------ sparse KL


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("k", [1, 4, V])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_kl_matches_naive(direction: str, k: int, temperature: float):
    *teachers, student = make_logits(6, n=3)
    teacher_lp = ensemble_log_probs(teachers, temperature)
    indices, top_lp, rest_lp, expected = naive_sparse_kl(
        rows(teacher_lp), k, student, temperature, direction
    )
    got = sparse_kl(indices, top_lp, rest_lp, student, temperature, direction)  # type: ignore[arg-type]
    assert got.shape == (B, L) and got.dtype == torch.float64
    assert_close(got, expected)
    if k == V:
        assert_close(got, dense_kl(teacher_lp, student, temperature, direction))  # type: ignore[arg-type]
    else:
        # The k + 1-bucket KL is a KL of coarser distributions: never above the dense one.
        dense = dense_kl(teacher_lp, student, temperature, direction)  # type: ignore[arg-type]
        assert (got <= dense + 1e-12).all()


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_sparse_kl_with_all_tokens_equals_dense_in_float32(direction: str):
    teacher, student = (t.float() for t in make_logits(7, n=2))
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    indices = torch.randperm(V).expand(B, L, V).contiguous()  # any order of all V tokens
    top_lp = teacher_lp.gather(-1, indices)
    rest = torch.full((B, L), -math.inf)
    got = sparse_kl(indices, top_lp, rest, student, 2.0, direction)  # type: ignore[arg-type]
    assert got.dtype == torch.float32
    assert_close(got, dense_kl(teacher_lp, student, 2.0, direction), rtol=1e-5)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [4, V])
def test_sparse_kl_gradients_finite_when_teacher_rest_mass_is_zero(k: int):
    teacher, student = make_logits(8, n=2)
    # A teacher whose mass lies entirely on its top k tokens.
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    indices = teacher_lp.topk(k, dim=-1).indices
    top_lp = torch.log_softmax(teacher_lp.gather(-1, indices), dim=-1)
    rest = torch.full((B, L), -math.inf, dtype=torch.float64)
    student = student.requires_grad_(True)
    kl = sparse_kl(indices, top_lp, rest, student, 2.0, "forward")
    assert torch.isfinite(kl).all()
    (grad,) = torch.autograd.grad(kl.sum(), student)
    assert torch.isfinite(grad).all()
    # Forward KL gradient over buckets: (q_s - p_t) / T on the top tokens, q_s / T elsewhere
    # (the teacher's rest bucket is empty), i.e. the student is pushed off the other tokens.
    p_s = torch.softmax(student.detach() / 2.0, dim=-1)
    p_t = torch.zeros_like(p_s).scatter(-1, indices, top_lp.exp())
    assert_close(grad, (p_s - p_t) / 2.0)
    if k == V:  # reverse KL with both rest buckets empty is also finite
        kl = sparse_kl(indices, top_lp, rest, student, 2.0, "reverse")
        (grad,) = torch.autograd.grad(kl.sum(), student)
        assert torch.isfinite(kl).all() and torch.isfinite(grad).all()


def test_sparse_kl_validation():
    student = torch.zeros(B, L, V)
    idx = torch.zeros(B, L, 3, dtype=torch.int64)
    lp = torch.zeros(B, L, 3)
    rest = torch.zeros(B, L)
    with pytest.raises(ValueError, match="int64"):
        sparse_kl(idx.int(), lp, rest, student, 2.0)
    with pytest.raises(ValueError, match="top_log_probs"):
        sparse_kl(idx, lp[..., :2], rest, student, 2.0)
    with pytest.raises(ValueError, match="rest_log_prob"):
        sparse_kl(idx, lp, rest[:, :2], student, 2.0)
    with pytest.raises(ValueError, match="exceeds"):
        sparse_kl(
            torch.zeros(B, L, V + 1, dtype=torch.int64),
            torch.zeros(B, L, V + 1),
            rest,
            student,
            2.0,
        )


# ------------------------------------------------------------------------ reduction, combination


def test_reduce_kl_matches_naive():
    per_position = make_logits(9)[0][..., 0].abs()
    values = [[float(x) for x in r] for r in per_position]
    total = sum(sum(r) for r in values)
    assert_close(reduce_kl(per_position, "sequence"), torch.tensor(total / B))
    assert_close(reduce_kl(per_position, "token"), torch.tensor(total / (B * L)))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_babyllama_parity(temperature: float):
    """reduce_kl(dense_kl, "sequence") is BabyLlama's KLDivLoss(batchmean) on [B, L, V]."""
    *teachers, student = make_logits(10, n=3)
    avg_teacher = sum(teachers) / len(teachers)
    babyllama = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(student / temperature, dim=-1), F.softmax(avg_teacher / temperature, dim=-1)
    )
    ours = reduce_kl(
        dense_kl(ensemble_log_probs(teachers, temperature), student, temperature), "sequence"
    )
    assert_close(ours, babyllama)
    token = reduce_kl(
        dense_kl(ensemble_log_probs(teachers, temperature), student, temperature), "token"
    )
    assert_close(ours, token * L)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_kd_loss_matches_naive(alpha: float, temperature: float, reduction: str):
    *teachers, student = make_logits(11, n=3)
    ids = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(0))
    ce = causal_lm_cross_entropy(student, ids)
    kl = reduce_kl(
        dense_kl(ensemble_log_probs(teachers, temperature), student, temperature), reduction
    )  # type: ignore[arg-type]
    got = kd_loss(ce, kl, alpha, temperature)

    naive_kl = naive_dense_kl(
        naive_ensemble(teachers, temperature, None, "logits"), student, temperature, "forward"
    )
    naive_reduced = float(naive_kl.sum()) / (B if reduction == "sequence" else B * L)
    expected = (
        alpha * naive_next_token_ce(student, ids) + (1 - alpha) * temperature**2 * naive_reduced
    )
    # causal_lm_cross_entropy computes in float32.
    assert_close(got.double(), torch.tensor(expected), rtol=1e-5)


# ------------------------------------------------------------------------------- chunked dense KL


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("chunk_rows", [3, B * L, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_dense_kl_matches_dense(direction: str, chunk_rows: int, dtype: torch.dtype):
    *teachers, student, upstream = make_logits(12, n=4)
    teacher_lp = ensemble_log_probs([t.float() for t in teachers], 2.0)
    weights = upstream[..., 0].float().abs()  # a non-uniform [B, L] upstream gradient
    student_a = student.to(dtype).requires_grad_(True)
    student_b = student.to(dtype).requires_grad_(True)

    ref = dense_kl(teacher_lp, student_a, 2.0, direction)  # type: ignore[arg-type]
    got = chunked_dense_kl(teacher_lp, student_b, 2.0, direction, chunk_rows=chunk_rows)  # type: ignore[arg-type]
    assert got.shape == (B, L) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)

    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), student_a)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), student_b)
    assert grad_got.dtype == dtype and grad_got.shape == student.shape
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-3}
    torch.testing.assert_close(grad_got, grad_ref, **tol)


def test_chunked_dense_kl_where_the_teacher_puts_no_mass():
    """0 log 0 = 0 in the chunked forward KL too: finite values and gradients, equal to the naive
    float64 sum over the tokens the teacher can emit."""
    (student,) = make_logits(14)
    teacher_lp = torch.log_softmax(make_logits(15)[0], dim=-1)
    teacher_lp[..., :3] = -math.inf
    teacher_lp = torch.log_softmax(teacher_lp, dim=-1)
    student = student.clone().requires_grad_(True)
    kl = chunked_dense_kl(teacher_lp, student, 2.0, chunk_rows=5)
    assert torch.isfinite(kl).all()
    assert_close(kl, naive_dense_kl(rows(teacher_lp), student.detach(), 2.0, "forward"))
    (grad,) = torch.autograd.grad(kl.sum(), student)
    reference = student.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(dense_kl(teacher_lp, reference, 2.0).sum(), reference)
    assert torch.isfinite(grad).all()
    assert_close(grad, expected)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_chunked_dense_kl_gradient_matches_finite_differences(direction: str):
    """Numerical check of the hand-derived gradients (central differences, float64)."""
    teacher, student, upstream = (
        t[:, :2, :5].contiguous() for t in make_logits(13, n=3, scale=1.0)
    )
    teacher_lp = torch.log_softmax(teacher, dim=-1)
    weights = upstream[..., 0].abs()

    def objective(s: torch.Tensor) -> torch.Tensor:
        return (chunked_dense_kl(teacher_lp, s, 2.0, direction, chunk_rows=3) * weights).sum()  # type: ignore[arg-type]

    assert_gradient_matches_finite_differences(objective, student)
    got = chunked_dense_kl(teacher_lp, student, 2.0, direction)  # type: ignore[arg-type]
    assert_close(got, dense_kl(teacher_lp, student, 2.0, direction))  # type: ignore[arg-type]


def test_chunked_dense_kl_without_gradients_and_guards():
    teacher, student = (t.float() for t in make_logits(14, n=2))
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    with torch.no_grad():
        got = chunked_dense_kl(teacher_lp, student.requires_grad_(True), 2.0, chunk_rows=4)
    assert not got.requires_grad
    torch.testing.assert_close(got, dense_kl(teacher_lp, student.detach(), 2.0))
    with pytest.raises(ValueError, match="no gradient"):
        chunked_dense_kl(teacher_lp.requires_grad_(True), student, 2.0)
    # The stored gradient is consumed in place: a second backward through the graph raises.
    kl = chunked_dense_kl(teacher_lp.detach(), student, 2.0).sum()
    kl.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        kl.backward()


# ------------------------------------------------------------------------------ chunked sparse KL


@pytest.mark.parametrize("k", [1, 4, V])
@pytest.mark.parametrize("chunk_rows", [3, 64])
def test_chunked_sparse_kl_matches_naive_values_and_autograd_gradients(k: int, chunk_rows: int):
    *teachers, student, upstream = make_logits(15, n=4)
    teacher_lp = ensemble_log_probs(teachers, 2.0)
    indices, top_lp, rest_lp, expected = naive_sparse_kl(
        rows(teacher_lp), k, student, 2.0, "forward"
    )
    weights = upstream[..., 0].abs()
    student_a = student.clone().requires_grad_(True)
    student_b = student.clone().requires_grad_(True)
    ref = sparse_kl(indices, top_lp, rest_lp, student_a, 2.0)  # type: ignore[arg-type]
    got = chunked_sparse_kl(indices, top_lp, rest_lp, student_b, 2.0, chunk_rows=chunk_rows)  # type: ignore[arg-type]
    assert got.shape == (B, L) and got.dtype == torch.float64
    assert_close(got, expected)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), student_a)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), student_b)
    torch.testing.assert_close(grad_got, grad_ref, rtol=1e-9, atol=1e-12)


def naive_uniform_tail_kl(
    indices: torch.Tensor,
    top_lp: torch.Tensor,
    rest_lp: torch.Tensor,
    student: torch.Tensor,
    T: float,
) -> torch.Tensor:
    """Forward KL, one position at a time in Python floats, against the teacher's top-k
    probabilities plus its rest mass spread evenly over the other V - k tokens."""
    out = [[0.0] * L for _ in range(B)]
    for b in range(B):
        for i in range(L):
            top = [int(v) for v in indices[b, i]]
            rest = math.exp(float(rest_lp[b, i]))
            uniform = rest / (V - len(top)) if len(top) < V else 0.0
            teacher = [uniform] * V
            for v, lp in zip(top, top_lp[b, i].tolist(), strict=True):
                teacher[v] = math.exp(lp)
            log_s = naive_log_softmax([x / T for x in student[b, i].tolist()])
            out[b][i] = sum(
                p * (math.log(p) - q) for p, q in zip(teacher, log_s, strict=True) if p > 0
            )
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 4, V])
@pytest.mark.parametrize("chunk_rows", [3, 64])
def test_uniform_tail_kl_matches_naive_and_its_closed_form_gradient(k: int, chunk_rows: int):
    *teachers, student, upstream = make_logits(17, n=4)
    teacher_lp = ensemble_log_probs(teachers, 2.0)
    indices, top_lp, rest_lp, _ = naive_sparse_kl(rows(teacher_lp), k, student, 2.0, "forward")
    expected = naive_uniform_tail_kl(indices, top_lp, rest_lp, student, 2.0)
    weights = upstream[..., 0].abs()
    student_a = student.clone().requires_grad_(True)
    student_b = student.clone().requires_grad_(True)
    ref = sparse_kl(indices, top_lp, rest_lp, student_a, 2.0, tail="uniform")
    got = chunked_sparse_kl(indices, top_lp, rest_lp, student_b, 2.0, chunk_rows, tail="uniform")
    assert_close(ref, expected)
    assert_close(got, expected)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), student_a)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), student_b)
    torch.testing.assert_close(grad_got, grad_ref, rtol=1e-9, atol=1e-12)


def test_uniform_tail_equals_dense_kl_when_the_teacher_tail_is_flat():
    """A teacher whose probabilities outside its top k are all equal is represented exactly."""
    (student,) = make_logits(18)
    k = 3
    teacher = torch.zeros(B, L, V, dtype=torch.float64)
    teacher[..., :k] = torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64)
    teacher_lp = torch.log_softmax(teacher, dim=-1)
    indices, top_lp, rest = top_k_buckets(teacher_lp, k)
    dense = dense_kl(teacher_lp, student, 2.0)
    assert_close(chunked_sparse_kl(indices, top_lp, rest, student, 2.0, tail="uniform"), dense)
    bucket = chunked_sparse_kl(indices, top_lp, rest, student, 2.0)
    assert (bucket < dense - 1e-6).all(), "the bucket KL ignores the tail's shape"


def test_uniform_tail_gradient_matches_finite_differences_and_refuses_reverse():
    teacher, student, upstream = (
        t[:, :2, :7].contiguous() for t in make_logits(19, n=3, scale=1.0)
    )
    teacher_lp = torch.log_softmax(teacher, dim=-1)
    indices, top_lp, rest = top_k_buckets(teacher_lp, 3)
    weights = upstream[..., 0].abs()

    def objective(s: torch.Tensor) -> torch.Tensor:
        kl = chunked_sparse_kl(indices, top_lp, rest, s, 2.0, chunk_rows=3, tail="uniform")
        return (kl * weights).sum()

    assert_gradient_matches_finite_differences(objective, student)
    with pytest.raises(ValueError, match="forward KL only"):
        sparse_kl(indices, top_lp, rest, student, 2.0, "reverse", tail="uniform")
    with pytest.raises(ValueError, match="tail must be"):
        chunked_sparse_kl(indices, top_lp, rest, student, 2.0, tail="flat")  # type: ignore[arg-type]


def naive_hybrid_kl(
    ids: torch.Tensor,
    log_p: torch.Tensor,
    rest: torch.Tensor,
    student: torch.Tensor,
    T: float,
    n_tail: int,
) -> torch.Tensor:
    """The hybrid cache's forward KL estimate, one position at a time in Python floats."""
    out = [[0.0] * L for _ in range(B)]
    k = ids.shape[-1]
    for b in range(B):
        for i in range(L):
            log_s = naive_log_softmax([x / T for x in student[b, i].tolist()])
            total = 0.0
            for j in range(k):
                weight = (
                    math.exp(float(log_p[b, i, j]))
                    if j < k - n_tail
                    else math.exp(float(rest[b, i])) / n_tail
                )
                if weight > 0:
                    total += weight * (float(log_p[b, i, j]) - log_s[int(ids[b, i, j])])
            out[b][i] = total
    return torch.tensor(out, dtype=torch.float64)


def hybrid_cache(teacher_lp: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    return hybrid_buckets(teacher_lp, k, seeds=[seed + b for b in range(teacher_lp.shape[0])])


@pytest.mark.parametrize("k", [2, 6])
@pytest.mark.parametrize("chunk_rows", [3, 64])
def test_hybrid_kl_matches_naive_and_autograd(k: int, chunk_rows: int):
    *teachers, student, upstream = make_logits(20, n=4)
    teacher_lp = ensemble_log_probs(teachers, 2.0)
    ids, log_p, rest = hybrid_cache(teacher_lp, k, seed=3)
    expected = naive_hybrid_kl(ids, log_p, rest, student, 2.0, k // 2)
    weights = upstream[..., 0].abs()
    leaf = student.clone().requires_grad_(True)
    got = chunked_hybrid_kl(ids, log_p, rest, leaf, 2.0, k // 2, chunk_rows)
    assert_close(got, expected)
    (grad,) = torch.autograd.grad((got * weights).sum(), leaf)
    # The same estimate through autograd: weights (head probabilities, rest / n per draw) times
    # minus the student's log-probabilities at the cached ids.
    reference = student.clone().requires_grad_(True)
    n_head = k - k // 2
    mass = torch.cat(
        [log_p[..., :n_head].exp(), (rest.exp() / (k // 2))[..., None].expand(B, L, k // 2)], -1
    )
    log_q = torch.log_softmax(reference / 2.0, -1).gather(-1, ids)
    (grad_ref,) = torch.autograd.grad(((-(mass * log_q).sum(-1)) * weights).sum(), reference)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_sampled_cache_through_the_hybrid_kl_equals_sampled_kl():
    """The objective reads a sampled cache with chunked_hybrid_kl (no head, rest log 1 = 0)."""
    from tinyminds.training.objectives.kd_losses import sampled_kl
    from tinyminds.training.teacher_cache import sampled_buckets

    teacher, student, upstream = make_logits(23, n=3)
    teacher_lp = torch.log_softmax(teacher / 2.0, -1)
    ids, log_p, rest = sampled_buckets(teacher_lp, 5, seeds=list(range(B)))
    weights = upstream[..., 0].abs()
    a, b = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    expected = sampled_kl(ids, log_p, a, 2.0)
    got = chunked_hybrid_kl(ids, log_p, rest, b, 2.0, n_tail=5, chunk_rows=3)
    assert_close(got, expected)
    (grad_a,) = torch.autograd.grad((expected * weights).sum(), a)
    (grad_b,) = torch.autograd.grad((got * weights).sum(), b)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-9, atol=1e-12)


def test_hybrid_kl_is_unbiased_for_the_dense_kl_and_its_gradient():
    """Averaged over many independent caches, the estimate and its gradient approach the dense
    KL's (the head is exact, the tail's draws unbiased)."""
    teacher, student = (t[:, :2].contiguous() for t in make_logits(21, n=2, scale=1.0))
    teacher_lp = torch.log_softmax(teacher / 2.0, -1)
    leaf = student.clone().requires_grad_(True)
    dense = dense_kl(teacher_lp, leaf, 2.0)
    (dense_grad,) = torch.autograd.grad(dense.sum(), leaf)
    values, grads = [], []
    for seed in range(0, 4000, B):
        ids, log_p, rest = hybrid_cache(teacher_lp, 4, seed)
        leaf = student.clone().requires_grad_(True)
        kl = chunked_hybrid_kl(ids, log_p, rest, leaf, 2.0, 2)
        (grad,) = torch.autograd.grad(kl.sum(), leaf)
        values.append(kl.detach())
        grads.append(grad)
    torch.testing.assert_close(torch.stack(values).mean(0), dense.detach(), atol=0.02, rtol=0.0)
    torch.testing.assert_close(torch.stack(grads).mean(0), dense_grad, atol=0.01, rtol=0.0)


def test_hybrid_kl_gradient_matches_finite_differences_and_an_empty_tail_is_finite():
    teacher, student, upstream = (
        t[:, :2, :7].contiguous() for t in make_logits(22, n=3, scale=1.0)
    )
    ids, log_p, rest = hybrid_cache(torch.log_softmax(teacher, dim=-1), 4, seed=0)
    weights = upstream[..., 0].abs()

    def objective(s: torch.Tensor) -> torch.Tensor:
        return (chunked_hybrid_kl(ids, log_p, rest, s, 2.0, 2, chunk_rows=3) * weights).sum()

    assert_gradient_matches_finite_differences(objective, student)
    peaked = torch.full_like(teacher, -math.inf)
    peaked[..., :2] = math.log(0.5)
    ids, log_p, rest = hybrid_cache(peaked, 4, seed=0)
    leaf = student.clone().requires_grad_(True)
    kl = chunked_hybrid_kl(ids, log_p, rest, leaf, 2.0, 2)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(leaf.grad).all()  # type: ignore[arg-type]


def test_chunked_sparse_kl_gradient_matches_finite_differences():
    """Numerical check of the hand-derived gradient (central differences, float64)."""
    teacher, student, upstream = (
        t[:, :2, :7].contiguous() for t in make_logits(16, n=3, scale=1.0)
    )
    teacher_lp = torch.log_softmax(teacher, dim=-1)
    indices, top_lp, rest = top_k_buckets(teacher_lp, 3)
    weights = upstream[..., 0].abs()

    def objective(s: torch.Tensor) -> torch.Tensor:
        return (chunked_sparse_kl(indices, top_lp, rest, s, 2.0, chunk_rows=3) * weights).sum()

    assert_gradient_matches_finite_differences(objective, student)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_sparse_kl_low_precision_and_a_float16_cache(dtype: torch.dtype):
    """As the objective calls it: float16 cached values widened to float32, student logits in the
    run's dtype; the gradient comes back in the logits' dtype."""
    teacher, student = make_logits(17, n=2)
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    indices, top_lp, rest = top_k_buckets(teacher_lp, 4)
    rest = rest.float()
    top_lp = top_lp.half().float()
    student_a = student.to(dtype).requires_grad_(True)
    student_b = student.to(dtype).requires_grad_(True)
    ref = sparse_kl(indices, top_lp, rest, student_a, 2.0)
    got = chunked_sparse_kl(indices, top_lp, rest, student_b, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    (grad_ref,) = torch.autograd.grad(ref.sum(), student_a)
    (grad_got,) = torch.autograd.grad(got.sum(), student_b)
    assert grad_got.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-3}
    torch.testing.assert_close(grad_got, grad_ref, **tol)


def test_chunked_sparse_kl_with_an_empty_teacher_rest_and_without_gradients():
    teacher, student = make_logits(18, n=2)
    teacher_lp = torch.log_softmax(teacher / 2.0, dim=-1)
    indices = teacher_lp.topk(4, dim=-1).indices
    top_lp = torch.log_softmax(teacher_lp.gather(-1, indices), dim=-1)  # all mass on the top 4
    rest = torch.full((B, L), -math.inf, dtype=torch.float64)
    student = student.requires_grad_(True)
    kl = chunked_sparse_kl(indices, top_lp, rest, student, 2.0)
    (grad,) = torch.autograd.grad(kl.sum(), student)
    p_s = torch.softmax(student.detach() / 2.0, dim=-1)
    p_t = torch.zeros_like(p_s).scatter(-1, indices, top_lp.exp())
    assert_close(grad, (p_s - p_t) / 2.0)
    with torch.no_grad():
        plain = chunked_sparse_kl(indices, top_lp, rest, student, 2.0)
    assert not plain.requires_grad
    assert_close(plain, sparse_kl(indices, top_lp, rest, student.detach(), 2.0))
    with pytest.raises(ValueError, match="chunk_rows"):
        chunked_sparse_kl(indices, top_lp, rest, student, 2.0, chunk_rows=0)


def test_sampled_kl_matches_its_formula_and_the_dense_kl_in_expectation() -> None:
    from tinyminds.training.objectives.kd_losses import sampled_kl

    generator = torch.Generator().manual_seed(3)
    vocab, temperature = 7, 2.0
    teacher = torch.log_softmax(
        torch.randn(1, 2, vocab, generator=generator, dtype=torch.float64), -1
    )
    student = torch.randn(1, 2, vocab, generator=generator, dtype=torch.float64, requires_grad=True)
    draws = 20_000
    ids = torch.multinomial(
        teacher.exp().reshape(-1, vocab), draws, replacement=True, generator=generator
    )
    ids = ids.reshape(1, 2, draws)
    estimate = sampled_kl(ids, teacher.gather(-1, ids), student, temperature)
    # Exact formula: mean over draws of log p_t(s) - log q_s(s).
    log_q = torch.log_softmax(student.detach() / temperature, -1)
    for t in range(2):
        naive = (
            sum(float(teacher[0, t, i]) - float(log_q[0, t, i]) for i in ids[0, t].tolist()) / draws
        )
        assert float(estimate[0, t].detach()) == pytest.approx(naive, rel=1e-9)
    # Unbiased: close to the exact KL, and its gradient close to (q_s - p_t) / T.
    exact = dense_kl(teacher, student, temperature)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0.05)
    (gradient,) = torch.autograd.grad(estimate.sum(), student)
    expected = (torch.softmax(student.detach() / temperature, -1) - teacher.exp()) / temperature
    torch.testing.assert_close(gradient, expected, atol=0.01, rtol=0.0)


# ------------------------------------------------------------- fused CE + cached KL, ensemble KL


def _cache_for(estimator: str, teacher_lp: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], dict]:
    """(cache tensors, cached_kd_loss keywords) for one of the estimators the objective reads."""
    if estimator == "hybrid":
        return hybrid_cache(teacher_lp, 6, seed=5), {"n_tail": 3}
    if estimator == "sample":
        ids, log_p, _ = hybrid_cache(teacher_lp, 4, seed=9)
        return (ids, log_p, torch.zeros(B, L, dtype=torch.float64)), {"n_tail": 4}
    cache = top_k_buckets(teacher_lp, 4)
    return cache, {"tail": estimator}


def _reference_kl(estimator: str, cache: tuple[torch.Tensor, ...], student, temperature, kw):
    """The per-position KL through plain autograd (sparse_kl, or the hybrid mass formula)."""
    ids, log_p, rest = cache
    if estimator in ("bucket", "uniform"):
        return sparse_kl(ids, log_p, rest, student, temperature, tail=kw["tail"])
    n_tail = kw["n_tail"]
    n_head = ids.shape[-1] - n_tail
    mass = torch.cat(
        [log_p[..., :n_head].exp(), (rest.exp() / n_tail)[..., None].expand(B, L, n_tail)], -1
    )
    log_q = torch.log_softmax(student / temperature, -1).gather(-1, ids)
    return (mass * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("estimator", ["bucket", "uniform", "hybrid", "sample"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_cached_kd_loss_equals_ce_plus_the_cached_kl_in_values_and_gradient(
    estimator: str, temperature: float, reduction: str
):
    *teachers, student = make_logits(31, n=3)
    ids_gen = torch.Generator().manual_seed(4)
    input_ids = torch.randint(0, V, (B, L), generator=ids_gen)
    labels = next_token_labels(input_ids)
    cache, kw = _cache_for(estimator, ensemble_log_probs(teachers, temperature))
    ce_weight, kl_weight = 0.3, 0.7 * temperature**2
    reference = student.clone().requires_grad_(True)
    # in float64 (causal_lm_cross_entropy computes in float32)
    ce_ref = F.cross_entropy(reference.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    kl_ref = reduce_kl(_reference_kl(estimator, cache, reference, temperature, kw), reduction)  # type: ignore[arg-type]
    loss_ref = ce_weight * ce_ref + kl_weight * kl_ref
    leaf = student.clone().requires_grad_(True)
    loss, ce, kl = cached_kd_loss(
        *cache, leaf, labels, temperature, ce_weight=ce_weight, kl_weight=kl_weight,
        reduction=reduction, chunk_rows=3, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert_close(ce, torch.tensor(naive_next_token_ce(student, input_ids), dtype=torch.float64))
    assert_close(kl, kl_ref.detach())
    assert_close(loss, loss_ref.detach())
    assert not ce.requires_grad and not kl.requires_grad
    # an upstream factor other than 1 (gradient accumulation, a loss scaler) scales the gradient
    (grad,) = torch.autograd.grad(0.37 * loss, leaf)
    (grad_ref,) = torch.autograd.grad(0.37 * loss_ref, reference)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_cached_kd_loss_in_float32_and_without_gradients_and_its_guards():
    gen = torch.Generator().manual_seed(8)
    vocab = 300
    teacher = torch.randn(4, 16, vocab, generator=gen, dtype=torch.float64) * 3
    student = torch.randn(4, 16, vocab, generator=gen, dtype=torch.float64) * 3
    labels = next_token_labels(torch.randint(0, vocab, (4, 16), generator=gen))
    cache = top_k_buckets(torch.log_softmax(teacher / 2, -1), 32)
    exact = cached_kd_loss(*cache, student, labels, 2.0, ce_weight=0.5, kl_weight=2.0)
    low = cached_kd_loss(
        *(c.float() if c.is_floating_point() else c for c in cache), student.float(), labels,
        2.0, ce_weight=0.5, kl_weight=2.0, chunk_rows=7,
    )  # fmt: skip
    for got, want in zip(low, exact, strict=True):
        torch.testing.assert_close(got, want.float(), rtol=2e-6, atol=1e-5)
    with torch.no_grad():
        plain = cached_kd_loss(*cache, student, labels, 2.0, ce_weight=0.5, kl_weight=2.0)
    assert_close(plain[0], exact[0])
    leaf = student.clone().requires_grad_(True)
    loss, _, _ = cached_kd_loss(*cache, leaf, labels, 2.0, ce_weight=0.5, kl_weight=2.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        loss.backward()
    with pytest.raises(ValueError, match="labels"):
        cached_kd_loss(*cache, student, labels[:, :-1], 2.0, ce_weight=0.5, kl_weight=2.0)
    with pytest.raises(ValueError, match="n_tail"):
        cached_kd_loss(*cache, student, labels, 2.0, ce_weight=0.5, kl_weight=2.0, n_tail=33)
    with pytest.raises(ValueError, match="reduction"):
        cached_kd_loss(*cache, student, labels, 2.0, ce_weight=0.5, kl_weight=2.0,
                       reduction="batch")  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("weights", [None, [1.0, 3.0], [0.0, 1.0]])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("chunk_rows", [3, 64])
def test_chunked_ensemble_kl_matches_the_ensemble_then_the_dense_kl(
    weights: list[float] | None, temperature: float, chunk_rows: int
):
    *teachers, student, upstream = make_logits(41, n=4)
    teacher_lp = naive_ensemble(teachers, temperature, weights, "logits")
    expected = naive_dense_kl(teacher_lp, student, temperature, "forward")
    leaf = student.clone().requires_grad_(True)
    got = chunked_ensemble_kl(teachers, leaf, temperature, weights, chunk_rows)
    assert got.shape == (B, L) and got.dtype == torch.float64
    assert_close(got, expected)
    reference = student.clone().requires_grad_(True)
    ref = dense_kl(ensemble_log_probs(teachers, temperature, weights), reference, temperature)
    scale = upstream[..., 0].abs()
    (grad,) = torch.autograd.grad((got * scale).sum(), leaf)
    (grad_ref,) = torch.autograd.grad((ref * scale).sum(), reference)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_chunked_ensemble_kl_in_float32_and_its_guards():
    gen = torch.Generator().manual_seed(2)
    teachers = [torch.randn(4, 16, 500, generator=gen, dtype=torch.float64) * 3 for _ in range(2)]
    student = torch.randn(4, 16, 500, generator=gen, dtype=torch.float64) * 3
    exact = chunked_ensemble_kl(teachers, student, 2.0)
    low = chunked_ensemble_kl([t.float() for t in teachers], student.float(), 2.0, chunk_rows=5)
    torch.testing.assert_close(low, exact.float(), rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match="no gradient"):
        chunked_ensemble_kl([teachers[0].requires_grad_(True)], student, 2.0)
    with pytest.raises(ValueError, match="shape"):
        chunked_ensemble_kl([teachers[1][:, :-1]], student, 2.0)
    with pytest.raises(ValueError, match="weights"):
        chunked_ensemble_kl(teachers[1:], student, 2.0, weights=[0.0])
