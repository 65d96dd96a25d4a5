"""Knowledge-distillation loss math as pure functions (computed in float32, or float64 if given).

The student minimises ``L = alpha * CE + (1 - alpha) * T^2 * KL``: ``CE`` is its own next-token
cross-entropy on the hard labels (`base.causal_lm_cross_entropy`), ``KL`` compares the teachers'
ensemble distribution with the student's, both softened by the temperature ``T``, at *every*
position of the ``[B, L, V]`` logits (BabyLlama applies it to all ``L`` positions, the last one
included, although that position has no next-token label). The ``T^2`` factor keeps the size of
the soft-target gradient independent of ``T`` (Hinton et al., 2015): the gradient of the KL
w.r.t. the student's logits is ``(p_s - p_t) / T``, and ``p_s - p_t`` itself shrinks about as
``1 / T``.

Teachers' ensemble (`ensemble_log_probs`). BabyLlama averages the teachers' *logits* before the
softmax, ``p_t = softmax(sum_i w_i z_i / T)`` with equal weights (``mode="logits"``, the default).
``mode="probs"`` instead averages the teachers' distributions, ``p_t = sum_i w_i softmax(z_i / T)``,
evaluated in log space as ``logsumexp_i(log w_i + log_softmax(z_i / T))`` so that nothing
underflows.

KL per position (`dense_kl`): forward ``KL(p_t || p_s) = sum_v p_t (log p_t - log p_s)`` (what
BabyLlama uses), reverse ``KL(p_s || p_t)``. Terms with a zero-probability left-hand side are
exactly 0 (``0 log 0 = 0``), without NaN in the value or the gradient.

Reduction (`reduce_kl`). BabyLlama calls ``KLDivLoss(reduction="batchmean")`` on ``[B, L, V]``
tensors; ``batchmean`` divides the total by ``input.size(0) = B`` only, so the KL is summed over
the ``L`` positions: about ``L`` times a per-token KL (128x for BabyLlama's chunks), which makes
the KD term dominate the CE term at ``alpha = 0.5``. ``"sequence"`` reproduces that scaling;
``"token"`` is the mean over the ``B * L`` positions.

Top-k teacher cache (`sparse_kl`). A cache that keeps only the teacher's ``k`` most likely tokens
per position stores their log-probabilities and the log of the remaining mass ``r_t``. The KL is
then taken between two distributions over ``k + 1`` buckets: the ``k`` tokens and "the rest".
Both sides are proper distributions (the teacher's ``k`` probabilities plus ``r_t`` sum to 1, and
so do the student's ``q_s(i)`` plus its own rest mass ``r_s``), so the value is a true KL: zero
exactly when the student matches the teacher on the buckets, never negative, and equal to the
dense KL when ``k = V``. (Dropping the rest bucket, or renormalising the top-k, would instead
reward the student for whatever it does outside the top-k, or ignore the teacher's tail mass.)
``r_s`` is computed as ``logsumexp`` over the non-top tokens minus the full ``logsumexp``, never
as ``1 - sum q_s(i)``, which cancels catastrophically when the top-k hold almost all the mass.

The bucket leaves the *shape* of the student's tail free: only its total mass is pulled to
``r_t``. With a weak, flat teacher (most of its mass beyond the top 32 of 16,000 tokens) the
student then learns nothing about the tail from the teacher. ``tail="uniform"`` instead spreads
``r_t`` evenly over the ``V - k`` tokens outside the top-k, so the teacher side is a proper
distribution over the whole vocabulary and the KL is an ordinary dense KL against it; it equals
the dense KL whenever the teacher's tail really is flat, and costs the same as the bucket.

Contrastive term (`info_nce`, ContrastiveLlama-58M). For a batch of ``N`` sequences, teacher
representations ``t_i`` and student representations ``s_j`` (already in the same space), the N-pair
loss is InfoNCE with in-batch negatives: ``-mean_i log softmax_j(sim(t_i, s_j) / tau)[i]``; the
positive of ``t_i`` is ``s_i`` (same input), its ``N - 1`` negatives are the student's
representations of the other inputs. ``sim`` is the cosine similarity (default) or the dot product
(Sohn's original N-pair loss, without normalisation). A sequence representation is the mean over
its positions (`mean_pool`) of the last hidden states or of the logits.

MATE-KD (`mate_loss`, MaskedAdversarialLlama-58M). The student's loss weighs its CE, the KD term on
the original text and the KD term on the generator's perturbed text equally by default:
``CE/3 + T^2 KL_orig/3 + T^2 KL_adv/3`` (the objective itself is `mate.MateObjective`).

Memory-lean path (`chunked_dense_kl`). On a GPU, the float32 copies of the ``[B, L, V]`` student
logits and softmax that autograd keeps for the dense KL are the main memory cost of a KD step.
`chunked_dense_kl` processes the flattened positions in chunks, computes each chunk's KL values
and its gradient w.r.t. the student logits at once, and stores only that gradient, in the student
logits' dtype; backward scales it by the upstream gradient.

Fused passes (`cached_kd_loss`, `chunked_ensemble_kl`). On a CPU the loss's passes over the
``[B, L, V]`` logits, each exponential and logarithm in particular, cost as much as a small
student's own forward pass. `cached_kd_loss` computes the CE and the forward KL to a teacher cache
from one exponential per element (the softmax at temperature 1 is the one at ``T`` raised to the
power ``T``, renormalised) and stores their summed gradient; `chunked_ensemble_kl` mixes the
teachers' logits inside the KL's chunks and writes the KL without a logarithm over the vocabulary.
Each is tested against the terms computed apart, in float64 (`tests/test_kd_losses.py`), and timed
against them by `benchmarks/bench_fused_losses.py`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

Direction = Literal["forward", "reverse"]
EnsembleMode = Literal["logits", "probs"]
Reduction = Literal["sequence", "token"]
Tail = Literal["bucket", "uniform"]

__all__ = [
    "cached_kd_loss",
    "chunked_dense_kl",
    "chunked_ensemble_kl",
    "chunked_hybrid_kl",
    "chunked_sparse_kl",
    "dense_kl",
    "ensemble_log_probs",
    "info_nce",
    "kd_loss",
    "mate_loss",
    "mean_pool",
    "reduce_kl",
    "sampled_kl",
    "sparse_kl",
]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64 (exact tests), else float32 (whatever the inputs' dtype)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


def _check_tail(tail: str, direction: str) -> None:
    if tail not in ("bucket", "uniform"):
        raise ValueError(f"tail must be 'bucket' or 'uniform', got {tail!r}")
    if tail == "uniform" and direction != "forward":
        raise ValueError("tail='uniform' is defined for the forward KL only")


def _check_chunk_rows(chunk_rows: int) -> None:
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")


def _check_direction(direction: str) -> None:
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")


def _kl_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Elementwise ``p (log p - log q)``, exactly 0 where ``p = 0`` (value and gradient NaN-free).

    The ``log p - log q`` difference is replaced by 0 before the product where ``log p = -inf``:
    a single ``where`` around the product would still back-propagate ``0 * (-inf - log q)`` = NaN.
    """
    empty = torch.isneginf(log_p)
    diff = torch.where(empty, torch.zeros_like(log_p), log_p - log_q)
    return torch.where(empty, torch.zeros_like(log_p), log_p.exp() * diff)


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` of two ``[N, V]`` tensors as one batched matrix product (no ``[N, V]``
    temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])


def ensemble_log_probs(
    teacher_logits: Sequence[Tensor],
    temperature: float,
    weights: Sequence[float] | None = None,
    mode: EnsembleMode = "logits",
) -> Tensor:
    """Log-probabilities ``[B, L, V]`` of the teachers' ensemble at temperature ``temperature``.

    ``mode="logits"`` (BabyLlama): ``log_softmax(sum_i w_i z_i / T)``; ``mode="probs"``:
    ``log(sum_i w_i softmax(z_i / T))``. ``weights`` are normalised to sum to 1 (equal when
    ``None``); teachers with weight 0 are skipped. Computed in float32 (float64 if any teacher's
    logits are float64).
    """
    _check_temperature(temperature)
    if mode not in ("logits", "probs"):
        raise ValueError(f"mode must be 'logits' or 'probs', got {mode!r}")
    teachers = list(teacher_logits)
    if not teachers:
        raise ValueError("ensemble_log_probs needs at least one teacher's logits")
    shape = teachers[0].shape
    for i, logits in enumerate(teachers):
        if logits.shape != shape:
            raise ValueError(
                f"teacher {i} has logits of shape {tuple(logits.shape)}, teacher 0 has {tuple(shape)}"
            )
    if weights is None:
        raw = [1.0] * len(teachers)
    else:
        raw = [float(w) for w in weights]
        if len(raw) != len(teachers):
            raise ValueError(f"got {len(raw)} weights for {len(teachers)} teachers")
        if any(not math.isfinite(w) or w < 0 for w in raw):
            raise ValueError(f"teacher weights must be finite and non-negative, got {raw}")
        if sum(raw) <= 0:
            raise ValueError(f"teacher weights must not all be zero, got {raw}")
    total = sum(raw)
    used = [(logits, w / total) for logits, w in zip(teachers, raw, strict=True) if w > 0]
    dtype = _compute_dtype(*teachers)

    if mode == "logits":
        # One float32 accumulator, whatever the number of teachers.
        acc = used[0][0].to(dtype) * (used[0][1] / temperature)
        for logits, w in used[1:]:
            acc.add_(logits.to(dtype), alpha=w / temperature)
        return torch.log_softmax(acc, dim=-1)

    acc = torch.log_softmax(used[0][0].to(dtype) / temperature, dim=-1) + math.log(used[0][1])
    for logits, w in used[1:]:
        term = torch.log_softmax(logits.to(dtype) / temperature, dim=-1) + math.log(w)
        acc = torch.logaddexp(acc, term)
    return acc


def dense_kl(
    teacher_log_probs: Tensor,
    student_logits: Tensor,
    temperature: float,
    direction: Direction = "forward",
) -> Tensor:
    """Per-position KL ``[B, L]`` between the teacher's distribution and ``softmax(student / T)``.

    ``teacher_log_probs`` are the teacher's log-probabilities at the same temperature (e.g. from
    `ensemble_log_probs`). ``forward``: ``KL(p_t || p_s) = sum_v p_t (log p_t - log p_s)``;
    ``reverse``: ``KL(p_s || p_t)``. Computed in float32 (float64 if either input is float64).
    """
    _check_temperature(temperature)
    _check_direction(direction)
    if teacher_log_probs.shape != student_logits.shape:
        raise ValueError(
            f"teacher log-probs {tuple(teacher_log_probs.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ in shape"
        )
    dtype = _compute_dtype(teacher_log_probs, student_logits)
    log_t = teacher_log_probs.to(dtype)
    log_s = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    if direction == "forward":
        return _kl_terms(log_t, log_s).sum(dim=-1)
    return _kl_terms(log_s, log_t).sum(dim=-1)


def _check_sparse_shapes(
    top_indices: Tensor, top_log_probs: Tensor, rest_log_prob: Tensor, student_logits: Tensor
) -> None:
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have a vocabulary dimension")
    batch_shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    if top_indices.dtype != torch.int64:
        raise ValueError(f"top_indices must be int64, got {top_indices.dtype}")
    if top_indices.shape != top_log_probs.shape or top_indices.shape[:-1] != batch_shape:
        raise ValueError(
            f"top_indices {tuple(top_indices.shape)} and top_log_probs "
            f"{tuple(top_log_probs.shape)} must both be {(*batch_shape, 'k')}"
        )
    if rest_log_prob.shape != batch_shape:
        raise ValueError(
            f"rest_log_prob has shape {tuple(rest_log_prob.shape)}, expected {tuple(batch_shape)}"
        )
    if top_indices.shape[-1] > vocab:
        raise ValueError(f"k = {top_indices.shape[-1]} exceeds the vocabulary size {vocab}")


def sparse_kl(
    top_indices: Tensor,
    top_log_probs: Tensor,
    rest_log_prob: Tensor,
    student_logits: Tensor,
    temperature: float,
    direction: Direction = "forward",
    tail: Tail = "bucket",
) -> Tensor:
    """Per-position KL ``[B, L]`` over ``k + 1`` buckets against a top-k teacher cache.

    ``top_indices`` ``[B, L, k]`` (int64, distinct per position) are the cached tokens,
    ``top_log_probs`` ``[B, L, k]`` the teacher's log-probabilities of them at temperature ``T``,
    ``rest_log_prob`` ``[B, L]`` the log of the teacher's remaining mass ``r_t`` (``-inf`` when
    the top-k hold it all). The student's buckets are ``q_s(i) = softmax(student / T)_i`` for the
    top-k tokens and ``r_s`` = its mass on all other tokens. ``forward``:
    ``sum_i p_t(i) (log p_t(i) - log q_s(i)) + r_t (log r_t - log r_s)``; ``reverse`` swaps the
    roles. With ``k = V`` (and ``r_t = 0``) this equals `dense_kl`. A zero bucket on the
    left-hand side contributes exactly 0; in ``reverse`` a teacher rest mass of 0 against a
    positive student rest mass is a genuinely infinite KL (the cache should not store an
    underflowed ``-inf`` rest when ``k < V``).

    ``tail="uniform"`` (forward only): the teacher's rest mass is spread evenly over the
    ``V - k`` other tokens, ``sum_i p_t(i) (log p_t(i) - log q_s(i)) + sum_{j not in top}
    u (log u - log q_s(j))`` with ``u = r_t / (V - k)``: a dense KL against that distribution.
    """
    _check_temperature(temperature)
    _check_direction(direction)
    _check_tail(tail, direction)
    _check_sparse_shapes(top_indices, top_log_probs, rest_log_prob, student_logits)

    dtype = _compute_dtype(top_log_probs, rest_log_prob, student_logits)
    scaled = student_logits.to(dtype) / temperature
    log_norm = torch.logsumexp(scaled, dim=-1)
    student_top = scaled.gather(-1, top_indices) - log_norm.unsqueeze(-1)
    outside = scaled.scatter(-1, top_indices, float("-inf"))
    student_rest = torch.logsumexp(outside, dim=-1) - log_norm
    teacher_top = top_log_probs.to(dtype)
    teacher_rest = rest_log_prob.to(dtype)
    if tail == "uniform":
        outside_count = student_logits.shape[-1] - top_indices.shape[-1]
        log_u = teacher_rest - math.log(max(outside_count, 1))
        student_outside = (scaled - log_norm.unsqueeze(-1)).scatter(-1, top_indices, 0.0)
        tail_terms = torch.where(
            teacher_rest > float("-inf"),
            teacher_rest.exp() * log_u - log_u.exp() * student_outside.sum(dim=-1),
            torch.zeros_like(teacher_rest),
        )
        return _kl_terms(teacher_top, student_top).sum(dim=-1) + tail_terms
    if direction == "forward":
        return _kl_terms(teacher_top, student_top).sum(dim=-1) + _kl_terms(
            teacher_rest, student_rest
        )
    return _kl_terms(student_top, teacher_top).sum(dim=-1) + _kl_terms(student_rest, teacher_rest)


def reduce_kl(per_position: Tensor, reduction: Reduction) -> Tensor:
    """Reduce a ``[B, L]`` per-position KL to a scalar.

    ``"sequence"``: sum over all positions divided by ``B`` (BabyLlama's ``batchmean`` on
    ``[B, L, V]``, about ``L`` times the per-token mean); ``"token"``: mean over the ``B * L``
    positions.
    """
    if per_position.dim() != 2:
        raise ValueError(
            f"expected a [B, L] per-position KL, got shape {tuple(per_position.shape)}"
        )
    if reduction == "sequence":
        return per_position.sum() / per_position.shape[0]
    if reduction == "token":
        return per_position.mean()
    raise ValueError(f"reduction must be 'sequence' or 'token', got {reduction!r}")


def mean_pool(states: Tensor) -> Tensor:
    """``[B, L, D]`` -> ``[B, D]``: the mean over positions (chunks have no padding), in float32."""
    if states.dim() != 3:
        raise ValueError(f"expected [B, L, D] states, got shape {tuple(states.shape)}")
    return states.to(_compute_dtype(states)).mean(dim=1)


def info_nce(
    teacher: Tensor,
    student: Tensor,
    temperature: float,
    similarity: Literal["cosine", "dot"] = "cosine",
) -> Tensor:
    """N-pair / InfoNCE loss with in-batch negatives between ``[N, D]`` representations.

    Row ``i`` of the ``[N, N]`` score matrix compares teacher ``i`` with every student
    representation; the loss is the cross-entropy of each row against its diagonal entry, averaged
    over the ``N`` rows. Needs ``N >= 2`` (with one sequence there is no negative). Computed in
    float32 (float64 if an input is float64).
    """
    _check_temperature(temperature)
    if teacher.dim() != 2 or teacher.shape != student.shape:
        raise ValueError(
            f"expected two [N, D] representations of one shape, got {tuple(teacher.shape)} "
            f"and {tuple(student.shape)}"
        )
    if teacher.shape[0] < 2:
        raise ValueError("the contrastive loss needs at least 2 sequences (in-batch negatives)")
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    dtype = _compute_dtype(teacher, student)
    t, s = teacher.to(dtype), student.to(dtype)
    if similarity == "cosine":
        t = torch.nn.functional.normalize(t, dim=-1)
        s = torch.nn.functional.normalize(s, dim=-1)
    scores = t @ s.T / temperature
    targets = torch.arange(scores.shape[0], device=scores.device)
    return torch.nn.functional.cross_entropy(scores, targets)


def kd_loss(ce: Tensor, kl: Tensor, alpha: float, temperature: float) -> Tensor:
    """``alpha * ce + (1 - alpha) * T^2 * kl`` (``kl`` already reduced to a scalar)."""
    _check_temperature(temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def mate_loss(
    ce: Tensor,
    kl_orig: Tensor,
    kl_adv: Tensor,
    weights: Sequence[float],
    temperature: float,
) -> Tensor:
    """MATE-KD's student loss ``(w_ce CE + w_kd T^2 KL_orig + w_adv T^2 KL_adv) / sum(w)``.

    ``kl_orig`` and ``kl_adv`` are the reduced KLs to the teachers' ensemble on the original and
    on the generator's perturbed text; each KD term is ``T^2 KL``, as in `kd_loss`. The weights
    ``(w_ce, w_kd, w_adv)`` are relative: equal weights give the paper's
    ``CE/3 + KD_orig/3 + KD_adv/3``.
    """
    _check_temperature(temperature)
    w_ce, w_kd, w_adv = (float(w) for w in weights)
    if min(w_ce, w_kd, w_adv) < 0 or w_ce + w_kd + w_adv <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {list(weights)}")
    kd = temperature**2 * (w_kd * kl_orig + w_adv * kl_adv)
    return (w_ce * ce + kd) / (w_ce + w_kd + w_adv)


class _ChunkedDenseKL(torch.autograd.Function):
    """Dense KL with the student-logit gradient computed chunk by chunk in forward."""

    @staticmethod
    def forward(
        ctx: Any,
        teacher_log_probs: Tensor,
        student_logits: Tensor,
        temperature: float,
        direction: str,
        chunk_rows: int,
    ) -> Tensor:
        vocab = student_logits.shape[-1]
        dtype = _compute_dtype(teacher_log_probs, student_logits)
        teacher = teacher_log_probs.reshape(-1, vocab)
        student = student_logits.reshape(-1, vocab)
        rows = student.shape[0]
        out = torch.empty(rows, dtype=dtype, device=student.device)
        need_grad = bool(ctx.needs_input_grad[1])
        grad = torch.empty_like(student) if need_grad else None
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            log_t = teacher[start:stop].to(dtype)
            log_s = torch.log_softmax(student[start:stop].to(dtype) / temperature, dim=-1)
            if direction == "forward":
                # sum_v p_t (log p_t - log p_s) in few passes over the vocabulary (this runs on
                # every position of every step): xlogy gives 0 log 0 = 0 where the teacher puts no
                # mass, and the cross term is one fused dot product per row.
                p_t = log_t.exp()
                kl = torch.xlogy(p_t, p_t).sum(dim=-1) - _row_dot(p_t, log_s)
                out[start:stop] = kl
                if grad is None:
                    continue
                # d/dz_j sum_v p_t,v (log p_t,v - log p_s,v) = (p_s,j sum_v p_t,v - p_t,j) / T
                # (sum_v p_t,v = 1 for a normalised teacher: (p_s - p_t) / T); in place over log_s.
                g = log_s.exp_().mul_(p_t.sum(dim=-1, keepdim=True) / temperature)
                grad[start:stop] = g.sub_(p_t, alpha=1 / temperature)
                continue
            kl = _kl_terms(log_s, log_t).sum(dim=-1)
            out[start:stop] = kl
            if grad is None:
                continue
            # d/dz_j sum_v p_s,v (log p_s,v - log p_t,v) = p_s,j (log p_s,j - log p_t,j - KL) / T
            g = _kl_terms(log_s, log_t) - log_s.exp() * kl.unsqueeze(-1)
            grad[start:stop] = g / temperature
        _keep_for_backward(ctx, grad, chunk_rows, student_logits.shape)
        return out.reshape(student_logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        return None, _scale_stored_grad(ctx, grad_output, "chunked_dense_kl"), None, None, None


def _keep_for_backward(ctx: Any, grad: Tensor | None, chunk_rows: int, shape: torch.Size) -> None:
    """Store the gradient a chunked KL computed in forward (None: no gradient was needed)."""
    ctx.grad, ctx.chunk_rows, ctx.student_shape = grad, chunk_rows, shape


def _scale_stored_grad(ctx: Any, grad_output: Tensor, name: str) -> Tensor:
    """The gradient a chunked KL stored in forward, times the upstream ``[B, L]`` gradient (or
    the scalar one of a loss)."""
    grad = ctx.grad
    if grad is None:
        raise RuntimeError(
            f"{name}: backward called twice (its stored gradient is consumed in place), or the "
            "student logits did not require a gradient"
        )
    ctx.grad = None
    if grad_output.dim() == 0:  # a loss's scalar upstream (`cached_kd_loss`): 1 leaves it as is
        if float(grad_output) == 1.0:
            return grad.reshape(ctx.student_shape)
        upstream = grad_output.reshape(1, 1).expand(grad.shape[0], 1)
    else:
        upstream = grad_output.reshape(-1, 1)
    # Scale in place, chunk by chunk: no full-size float32 temporary.
    for start in range(0, grad.shape[0], ctx.chunk_rows):
        stop = min(start + ctx.chunk_rows, grad.shape[0])
        grad[start:stop].mul_(upstream[start:stop])
    return grad.reshape(ctx.student_shape)


def chunked_dense_kl(
    teacher_log_probs: Tensor,
    student_logits: Tensor,
    temperature: float,
    direction: Direction = "forward",
    chunk_rows: int = 4096,
) -> Tensor:
    """`dense_kl` with a lean autograd footprint: same ``[B, L]`` values, same gradient.

    The flattened ``B * L`` positions are processed ``chunk_rows`` at a time; each chunk's KL is
    computed in float32 (float64 if an input is float64), and so is its gradient w.r.t. the
    student logits (forward KL: ``(p_s - p_t) / T``; reverse KL:
    ``p_s (log p_s - log p_t - KL) / T``), which is stored in the student logits' dtype. The
    autograd graph therefore holds one student-sized tensor instead of float32 copies of the
    softmax; backward multiplies it, in place, by the upstream ``[B, L]`` gradient (so the graph
    can be back-propagated once only). Nothing is stored when no gradient is needed.
    ``teacher_log_probs`` get no gradient: use `dense_kl` where one must flow into the teachers.
    """
    _check_temperature(temperature)
    _check_direction(direction)
    _check_chunk_rows(chunk_rows)
    if teacher_log_probs.shape != student_logits.shape:
        raise ValueError(
            f"teacher log-probs {tuple(teacher_log_probs.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ in shape"
        )
    if teacher_log_probs.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "chunked_dense_kl gives the teacher log-probs no gradient; detach them, or use "
            "dense_kl where a gradient must flow into the teachers"
        )
    return _ChunkedDenseKL.apply(
        teacher_log_probs, student_logits, float(temperature), direction, chunk_rows
    )


class StudentRows(NamedTuple):
    """A chunk of the student's distribution at temperature T, from one exponential pass."""

    q: Tensor
    """``softmax(z / T)`` ``[n, V]``; the row function may overwrite it (with its gradient)."""
    log_q_at: Tensor
    """``log q`` at the cached ids ``[n, k]``."""
    log_norm: Tensor
    """``logsumexp(z / T)`` ``[n]``."""
    scaled_sum: Tensor | None
    """``sum_v z_v / T`` ``[n]`` where the estimator asks for it (the uniform tail), else None."""


def _student_rows(scaled: Tensor, index: Tensor, with_sum: bool) -> StudentRows:
    """The student's softmax of a chunk of ``scaled = z / T`` (a fresh tensor, overwritten).

    One exponential per element: the softmax is ``exp(s - max) / sum`` and the log-normaliser
    ``max + log(sum)`` comes from the same sum, where ``logsumexp`` and then ``exp(s - lse)``
    would take two passes of ``exp`` over the ``[n, V]`` chunk (a CPU's main cost here)."""
    scaled_sum = scaled.sum(dim=-1) if with_sum else None
    at_ids = scaled.gather(-1, index)
    top = scaled.amax(dim=-1, keepdim=True)
    q = scaled.sub_(top).exp_()
    total = q.sum(dim=-1, keepdim=True)
    q.div_(total)
    log_norm = top + total.log()
    return StudentRows(q, at_ids - log_norm, log_norm.squeeze(-1), scaled_sum)


RowKL = Callable[[Tensor, Tensor, Tensor, StudentRows, bool], tuple[Tensor, Tensor | None]]
"""A chunk of a cached KL: ``(ids, teacher log-probs, teacher log-rest, the student's rows,
need_grad)`` -> (the KL per row, its gradient w.r.t. ``logits / T`` or None). The function may
overwrite the student's ``q``."""


class CachedEstimator(NamedTuple):
    """How a cached KL reads its cache: the row function and what it needs of the student."""

    row_kl: RowKL
    with_sum: bool
    name: str


def _cache_chunks(
    ids: Tensor, log_probs: Tensor, rest_log_prob: Tensor, student_logits: Tensor, chunk_rows: int
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor, Tensor]]:
    """Per chunk of ``chunk_rows`` flattened positions: (its rows, cached ids, teacher log-probs,
    teacher log-rest, student logits), the last three in the compute dtype (`_compute_dtype`)."""
    vocab, k = student_logits.shape[-1], ids.shape[-1]
    dtype = _compute_dtype(log_probs, rest_log_prob, student_logits)
    student = student_logits.reshape(-1, vocab)
    flat_ids, teacher = ids.reshape(-1, k), log_probs.reshape(-1, k)
    teacher_rest = rest_log_prob.reshape(-1)
    for start in range(0, student.shape[0], chunk_rows):
        rows = slice(start, min(start + chunk_rows, student.shape[0]))
        yield (
            rows,
            flat_ids[rows],
            teacher[rows].to(dtype),
            teacher_rest[rows].to(dtype),
            student[rows].to(dtype),
        )


class _ChunkedCachedKL(torch.autograd.Function):
    """A KL against a teacher cache, computed with its gradient in closed form, chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        ids: Tensor,
        log_probs: Tensor,
        rest_log_prob: Tensor,
        student_logits: Tensor,
        temperature: float,
        chunk_rows: int,
        estimator: CachedEstimator,
    ) -> Tensor:
        dtype = _compute_dtype(log_probs, rest_log_prob, student_logits)
        student = student_logits.reshape(-1, student_logits.shape[-1])
        out = torch.empty(student.shape[0], dtype=dtype, device=student.device)
        grad = torch.empty_like(student) if ctx.needs_input_grad[3] else None
        chunks = _cache_chunks(ids, log_probs, rest_log_prob, student_logits, chunk_rows)
        for rows, index, log_p, log_rest, logits in chunks:
            kl, chunk_grad = estimator.row_kl(
                index,
                log_p,
                log_rest,
                _student_rows(logits / temperature, index, estimator.with_sum),
                grad is not None,
            )
            out[rows] = kl
            if grad is not None and chunk_grad is not None:
                grad[rows] = chunk_grad.div_(temperature)
        _keep_for_backward(ctx, grad, chunk_rows, student_logits.shape)
        ctx.name = estimator.name
        return out.reshape(student_logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad = _scale_stored_grad(ctx, grad_output, ctx.name)
        return None, None, None, grad, None, None, None


def _bucket_rows(
    index: Tensor, log_p: Tensor, log_r_t: Tensor, student: StudentRows, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Forward KL over the top-k buckets plus one bucket for the rest (`sparse_kl`)."""
    q = student.q
    q_top = q.gather(-1, index)
    q.scatter_(-1, index, 0.0)  # now the student's mass outside the top k...
    r_s = q.sum(dim=-1)  # ...summed without the cancellation of 1 - sum(q_top)
    kl = _kl_terms(log_p, student.log_q_at).sum(dim=-1) + _kl_terms(log_r_t, r_s.log())
    if not need_grad:
        return kl, None
    # d KL / d (z_j / T) = q_j * c - p_j for the top tokens, q_j * (c - r_t / r_s)
    # outside them, with c = sum(p_top) + r_t (1 up to the float16 rounding of p_top).
    p_top, r_t = log_p.exp(), log_r_t.exp()
    c = p_top.sum(dim=-1) + r_t
    ratio = torch.where(r_t > 0, r_t / r_s, torch.zeros_like(r_t))
    q.mul_((c - ratio).unsqueeze(-1))
    q.scatter_(-1, index, q_top * c.unsqueeze(-1) - p_top)
    return kl, q


def _uniform_tail_rows(
    index: Tensor, log_p: Tensor, log_r_t: Tensor, student: StudentRows, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Forward KL against the top k plus the rest spread evenly over the other tokens.

    The tail sum ``sum_{j outside} log q_j`` is the sum over all tokens minus the top-k's, so no
    masked copy of the row is made.
    """
    assert student.scaled_sum is not None, "the uniform tail needs the scaled logits' sum"
    vocab = student.q.shape[-1]
    outside_count = max(vocab - index.shape[-1], 1)
    log_u = log_r_t - math.log(outside_count)
    sum_log_q = student.scaled_sum - vocab * student.log_norm
    outside_log_q = sum_log_q - student.log_q_at.sum(dim=-1)
    tail = torch.where(
        log_r_t > float("-inf"),
        log_r_t.exp() * log_u - log_u.exp() * outside_log_q,
        torch.zeros_like(log_r_t),
    )
    kl = _kl_terms(log_p, student.log_q_at).sum(dim=-1) + tail
    if not need_grad:
        return kl, None
    # d KL / d (z_j / T) = q_j c - a_j, a = p_top on the top k and u elsewhere;
    # c = sum(a) = sum(p_top) + r_t.
    p_top, r_t = log_p.exp(), log_r_t.exp()
    c = (p_top.sum(dim=-1) + r_t).unsqueeze(-1)
    u = (r_t / outside_count).unsqueeze(-1)
    q = student.q.mul_(c).sub_(u)
    q.scatter_(-1, index, q.gather(-1, index) + u - p_top)
    return kl, q


BUCKET = CachedEstimator(_bucket_rows, False, "chunked_sparse_kl")
UNIFORM_TAIL = CachedEstimator(_uniform_tail_rows, True, "chunked_sparse_kl")


def chunked_sparse_kl(
    top_indices: Tensor,
    top_log_probs: Tensor,
    rest_log_prob: Tensor,
    student_logits: Tensor,
    temperature: float,
    chunk_rows: int = 4096,
    tail: Tail = "bucket",
) -> Tensor:
    """Forward `sparse_kl` with a closed-form gradient: same ``[B, L]`` values, same gradient.

    Why: autograd through `sparse_kl` keeps several float32 ``[B, L, V]`` intermediates (the
    scaled logits, the masked copy, two softmaxes) and walks them again in backward, which made a
    cached KD step no cheaper than running the teachers. Here each chunk of ``chunk_rows``
    positions is visited once: the softmax is built in place, the mass outside the top k is read
    off it, and the gradient w.r.t. the student logits (``(q_j c - p_j) / T`` on the top-k
    tokens, ``q_j (c - r_t / r_s) / T`` elsewhere, ``c`` the teacher's total bucket mass) is
    written in the logits' dtype; backward scales it in place by the upstream gradient (so the
    graph can be back-propagated once only). The teacher inputs get no gradient.
    ``tail`` as in `sparse_kl` (uniform: gradient ``q_j c - a_j``, ``a`` the teacher's top-k
    probabilities and ``r_t / (V - k)`` elsewhere).
    """
    _check_temperature(temperature)
    _check_tail(tail, "forward")
    _check_chunk_rows(chunk_rows)
    _check_sparse_shapes(top_indices, top_log_probs, rest_log_prob, student_logits)
    return _ChunkedCachedKL.apply(
        top_indices,
        top_log_probs,
        rest_log_prob,
        student_logits,
        float(temperature),
        chunk_rows,
        UNIFORM_TAIL if tail == "uniform" else BUCKET,
    )


def _hybrid_rows(
    n_tail: int,
    index: Tensor,
    log_p: Tensor,
    log_r_t: Tensor,
    student: StudentRows,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Forward KL estimate against a top-k head plus ``n_tail`` draws from the tail."""
    weights = _hybrid_weights(log_p, log_r_t, n_tail)
    terms = weights * (log_p - student.log_q_at)
    # A token of zero mass (a draw from an empty tail) adds 0, not 0 * -inf = NaN.
    kl = torch.where(weights > 0, terms, 0.0).sum(dim=-1)
    if not need_grad:
        return kl, None
    # d/d(z/T) of sum_j w_j (log p_j - log q(id_j)) = q * sum(w) - (w scattered on ids).
    q = student.q.mul_(weights.sum(dim=-1, keepdim=True))
    return kl, q.scatter_add_(-1, index, -weights)


def hybrid_estimator(n_tail: int) -> CachedEstimator:
    """The estimator of a cache holding a top-k head and ``n_tail`` draws from the tail."""
    return CachedEstimator(functools.partial(_hybrid_rows, n_tail), False, "chunked_hybrid_kl")


def _hybrid_weights(log_p: Tensor, log_rest: Tensor, n_tail: int) -> Tensor:
    """Mass each cached token stands for: its probability for the head, rest / n_tail per draw."""
    n_head = log_p.shape[-1] - n_tail
    head = log_p[..., :n_head].exp()
    tail = (log_rest.exp() / max(n_tail, 1)).unsqueeze(-1).expand(*log_rest.shape, n_tail)
    return torch.cat([head, tail], dim=-1)


def chunked_hybrid_kl(
    ids: Tensor,
    log_probs: Tensor,
    rest_log_prob: Tensor,
    student_logits: Tensor,
    temperature: float,
    n_tail: int,
    chunk_rows: int = 4096,
) -> Tensor:
    """Forward KL(teacher || student) per position ``[B, L]`` from a hybrid teacher cache.

    ``ids`` ``[B, L, k]``: the teacher's ``k - n_tail`` most likely tokens, then ``n_tail`` tokens
    drawn (with replacement) from its distribution outside them; ``log_probs`` their teacher
    log-probabilities at temperature T; ``rest_log_prob`` the log of the mass ``r`` outside the
    head. The value ``sum_head p_i (log p_i - log q_i) + (r / n_tail) sum_draws (log p_j - log
    q_j)`` is exact on the head and an unbiased estimate of the tail's part of the dense KL, and
    so is its gradient w.r.t. the student's logits, ``(q * (sum p_head + r) - a) / T`` with ``a``
    the head probabilities and ``r / n_tail`` per draw, computed in closed form chunk by chunk
    (stored in the logits' dtype, as in `chunked_sparse_kl`). The teacher inputs get no gradient.
    """
    _check_temperature(temperature)
    _check_chunk_rows(chunk_rows)
    _check_sparse_shapes(ids, log_probs, rest_log_prob, student_logits)
    if not 0 <= n_tail <= ids.shape[-1]:
        raise ValueError(f"n_tail = {n_tail} must lie in [0, k = {ids.shape[-1]}]")
    return _ChunkedCachedKL.apply(
        ids,
        log_probs,
        rest_log_prob,
        student_logits,
        float(temperature),
        chunk_rows,
        hybrid_estimator(n_tail),
    )


def _softmax_power(q: Tensor, temperature: float) -> Tensor:
    """``q ** T`` as a new tensor: proportional to ``softmax(z)`` when ``q = softmax(z / T)``
    (``T = 1``: a copy; ``T = 2``: one multiply, no transcendental function)."""
    if temperature == 1.0:
        return q.clone()
    if temperature == 2.0:
        return q * q
    return q.pow(temperature)


class _CachedKDLoss(torch.autograd.Function):
    """``ce_weight * CE + kl_weight * KL`` against a teacher cache, one pass per chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        ids: Tensor,
        log_probs: Tensor,
        rest_log_prob: Tensor,
        student_logits: Tensor,
        labels: Tensor,
        temperature: float,
        chunk_rows: int,
        estimator: CachedEstimator,
        ce_weight: float,
        kl_weight: float,
        reduction: Reduction,
    ) -> tuple[Tensor, Tensor, Tensor]:
        dtype = _compute_dtype(log_probs, rest_log_prob, student_logits)
        student = student_logits.reshape(-1, student_logits.shape[-1])
        flat_labels = labels.reshape(-1)
        valid = flat_labels != -100
        safe_labels = flat_labels.clamp_min(0).unsqueeze(-1)  # ignored rows weigh 0
        rows = student.shape[0]
        n_labels = valid.sum()
        kl_denominator = student_logits.shape[0] if reduction == "sequence" else rows
        kl_row_weight = kl_weight / kl_denominator / temperature  # per row, on d/d(z / T)
        ce_row_weights = valid.to(dtype) * (ce_weight / n_labels.clamp_min(1).to(dtype))
        ce_rows = torch.empty(rows, dtype=dtype, device=student.device)
        kl_rows = torch.empty(rows, dtype=dtype, device=student.device)
        grad = torch.empty_like(student) if ctx.needs_input_grad[3] else None
        chunks = _cache_chunks(ids, log_probs, rest_log_prob, student_logits, chunk_rows)
        for span, index, log_p, log_rest, logits in chunks:
            label_logits = logits.gather(-1, safe_labels[span]).squeeze(-1)
            rows_t = _student_rows(logits / temperature, index, estimator.with_sum)
            # softmax(z) = q^T / sum(q^T) with q = softmax(z / T): the CE reuses the KL's
            # exponentials; log sum_v exp(z_v) = T logsumexp(z / T) + log sum(q^T).
            probs = _softmax_power(rows_t.q, temperature)
            total = probs.sum(dim=-1)
            ce = temperature * rows_t.log_norm + total.log() - label_logits
            ce_rows[span] = torch.where(valid[span], ce, 0.0)
            kl, kl_grad = estimator.row_kl(index, log_p, log_rest, rows_t, grad is not None)
            kl_rows[span] = kl
            if grad is not None and kl_grad is not None:
                # d CE / d z = softmax(z) - one_hot(label), per labelled row
                weight = ce_row_weights[span].unsqueeze(-1)
                probs.mul_(weight / total.unsqueeze(-1))
                probs.scatter_add_(-1, safe_labels[span], -weight)
                grad[span] = kl_grad.mul_(kl_row_weight).add_(probs)
        ce_mean = ce_rows.sum() / n_labels.to(dtype)
        kl_value = kl_rows.sum() / kl_denominator
        loss = ce_weight * ce_mean + kl_weight * kl_value
        _keep_for_backward(ctx, grad, chunk_rows, student_logits.shape)
        ctx.mark_non_differentiable(ce_mean, kl_value)
        return loss, ce_mean, kl_value

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        grad = _scale_stored_grad(ctx, grad_loss, "cached_kd_loss")
        return (None, None, None, grad) + (None,) * 7


def cached_kd_loss(
    ids: Tensor,
    log_probs: Tensor,
    rest_log_prob: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float,
    *,
    ce_weight: float,
    kl_weight: float,
    reduction: Reduction = "sequence",
    n_tail: int | None = None,
    tail: Tail = "bucket",
    chunk_rows: int = 4096,
) -> tuple[Tensor, Tensor, Tensor]:
    """(``ce_weight * CE + kl_weight * KL``, CE, KL): the student's CE and its forward KL to a
    teacher cache in one pass over the logits, with the gradient in closed form.

    ``CE`` is the mean next-token cross-entropy over the positions whose ``labels`` are not
    -100 (`base.causal_lm_cross_entropy`); ``KL`` is `reduce_kl` of the per-position forward KL
    that `chunked_sparse_kl` (``n_tail=None``, with ``tail``) or `chunked_hybrid_kl` (``n_tail``
    draws after the head) computes. Only the weighted sum carries a gradient; CE and KL are
    returned detached for the logs.

    Why: the CE's softmax at temperature 1 is the KL's at ``T`` raised to the power ``T`` and
    renormalised, so each chunk of logits is read once and exponentiated once for both terms,
    and their gradients are summed in place into one stored tensor (the separate CE costs a
    log-softmax and its backward over the ``[B, L, V]`` logits, and autograd adds the two
    gradients in a further pass). For ``T = 2`` the power is one multiply.
    """
    _check_temperature(temperature)
    _check_tail(tail, "forward")
    _check_chunk_rows(chunk_rows)
    _check_sparse_shapes(ids, log_probs, rest_log_prob, student_logits)
    if reduction not in ("sequence", "token"):
        raise ValueError(f"reduction must be 'sequence' or 'token', got {reduction!r}")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must have the logits' shape without the vocabulary "
            f"{tuple(student_logits.shape[:-1])}"
        )
    if n_tail is not None:
        if not 0 <= n_tail <= ids.shape[-1]:
            raise ValueError(f"n_tail = {n_tail} must lie in [0, k = {ids.shape[-1]}]")
        estimator = hybrid_estimator(n_tail)
    else:
        estimator = UNIFORM_TAIL if tail == "uniform" else BUCKET
    loss, ce, kl = _CachedKDLoss.apply(
        ids,
        log_probs,
        rest_log_prob,
        student_logits,
        labels,
        float(temperature),
        chunk_rows,
        estimator,
        float(ce_weight),
        float(kl_weight),
        reduction,
    )
    return loss, ce, kl


class _ChunkedEnsembleKL(torch.autograd.Function):
    """Forward KL from the teachers' logit-average ensemble, built chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        student_logits: Tensor,
        temperature: float,
        chunk_rows: int,
        weights: list[float],
        *teacher_logits: Tensor,
    ) -> Tensor:
        vocab = student_logits.shape[-1]
        dtype = _compute_dtype(student_logits, *teacher_logits)
        student = student_logits.reshape(-1, vocab)
        teachers = [t.reshape(-1, vocab) for t in teacher_logits]
        rows = student.shape[0]
        out = torch.empty(rows, dtype=dtype, device=student.device)
        grad = torch.empty_like(student) if ctx.needs_input_grad[0] else None
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            # a = sum_i w_i z_i / T, the ensemble's scaled logits; s = z_student / T
            mixed = teachers[0][start:stop].to(dtype) * (weights[0] / temperature)
            for teacher, weight in zip(teachers[1:], weights[1:], strict=True):
                mixed.add_(teacher[start:stop].to(dtype), alpha=weight / temperature)
            scaled = student[start:stop].to(dtype) / temperature
            top_t = mixed.amax(dim=-1, keepdim=True)
            p = (mixed - top_t).exp_()
            total_t = p.sum(dim=-1, keepdim=True)
            p.div_(total_t)
            top_s = scaled.amax(dim=-1, keepdim=True)
            q = (scaled - top_s).exp_()
            total_s = q.sum(dim=-1, keepdim=True)
            # KL = sum_v p_v (log p_v - log q_v) = sum_v p_v (a_v - s_v) - c (lse(a) - lse(s)),
            # c = sum_v p_v: no logarithm over the vocabulary at all.
            c = p.sum(dim=-1)
            log_ratio = (top_t + total_t.log() - top_s - total_s.log()).squeeze(-1)
            out[start:stop] = _row_dot(p, mixed.sub_(scaled)) - c * log_ratio
            if grad is not None:
                # d KL / d z_student = (q c - p) / T
                grad[start:stop] = q.mul_(c.unsqueeze(-1) / total_s).sub_(p).div_(temperature)
        _keep_for_backward(ctx, grad, chunk_rows, student_logits.shape)
        ctx.teachers = len(teachers)
        return out.reshape(student_logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad = _scale_stored_grad(ctx, grad_output, "chunked_ensemble_kl")
        return (grad, None, None, None) + (None,) * ctx.teachers


def chunked_ensemble_kl(
    teacher_logits: Sequence[Tensor],
    student_logits: Tensor,
    temperature: float,
    weights: Sequence[float] | None = None,
    chunk_rows: int = 4096,
) -> Tensor:
    """Forward ``KL(p_t || p_s)`` per position ``[B, L]`` from the teachers' raw logits, with
    ``p_t`` BabyLlama's ensemble ``softmax(sum_i w_i z_i / T)`` (`ensemble_log_probs`, mode
    ``logits``): the values and student gradient of ``chunked_dense_kl(ensemble_log_probs(...))``.

    Why: the ensemble's log-probabilities are never formed. Each chunk of positions mixes the
    teachers' logits, exponentiates teacher and student once each, and writes the KL as
    ``sum_v p_v (a_v - s_v) - c (logsumexp(a) - logsumexp(s))`` (``a``, ``s`` the scaled logits,
    ``c = sum_v p_v``) and its gradient ``(q c - p) / T``; the separate ensemble costs several
    passes over ``[B, L, V]`` tensors and the KL three more transcendental passes. The teachers'
    logits get no gradient (`dense_kl` is the path where one must reach them).
    """
    _check_temperature(temperature)
    _check_chunk_rows(chunk_rows)
    teachers = list(teacher_logits)
    if not teachers:
        raise ValueError("chunked_ensemble_kl needs at least one teacher's logits")
    for i, logits in enumerate(teachers):
        if logits.shape != student_logits.shape:
            raise ValueError(
                f"teacher {i} has logits of shape {tuple(logits.shape)}, the student "
                f"{tuple(student_logits.shape)}"
            )
        if logits.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "chunked_ensemble_kl gives the teachers' logits no gradient; detach them, or use "
                "dense_kl where a gradient must flow into the teachers"
            )
    raw = [1.0] * len(teachers) if weights is None else [float(w) for w in weights]
    if len(raw) != len(teachers) or any(not math.isfinite(w) or w < 0 for w in raw) or not sum(raw):
        raise ValueError(
            f"weights must be one finite non-negative value per teacher, not all zero: {raw}"
        )
    shares = [w / sum(raw) for w in raw]
    used = [(t, w) for t, w in zip(teachers, shares, strict=True) if w > 0]
    return _ChunkedEnsembleKL.apply(
        student_logits,
        float(temperature),
        chunk_rows,
        [w for _, w in used],
        *[t for t, _ in used],
    )


def sampled_kl(
    sample_ids: Tensor, sample_log_probs: Tensor, student_logits: Tensor, temperature: float
) -> Tensor:
    """Forward KL(teacher || student) per position, estimated from k tokens drawn from the teacher.

    ``sample_ids`` ``[B, L, k]`` are draws (with replacement) from the teacher's distribution at
    temperature T and ``sample_log_probs`` their teacher log-probs. The estimate
    ``mean_j (log p_t(s_j) - log q_s(s_j))`` is unbiased for the KL, and its gradient
    ``(q_s - p_hat) / T`` (p_hat: the draws' empirical distribution) is unbiased for the true
    ``(q_s - p_t) / T``: the tail of a flat teacher is represented in proportion, which a top-k
    cache cannot do. Returns ``[B, L]`` float32 (float64 for float64 inputs).

    This is the plain autograd form, kept as the reference: training reads a sampled cache through
    `chunked_hybrid_kl` with no head (the same values and gradient, tested), as `sparse_kl` is the
    reference of `chunked_sparse_kl`.
    """
    _check_temperature(temperature)
    if sample_ids.dtype != torch.int64:
        raise ValueError(f"sample_ids must be int64, got {sample_ids.dtype}")
    dtype = _compute_dtype(sample_log_probs, student_logits)
    student_log_probs = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    drawn = student_log_probs.gather(-1, sample_ids)
    return (sample_log_probs.to(dtype) - drawn).mean(dim=-1)
