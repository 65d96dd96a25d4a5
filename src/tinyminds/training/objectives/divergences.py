"""The divergences a student can be distilled with, as pure functions over log-distributions.

Notation: ``p`` is the teachers' ensemble at temperature T, ``q`` the student's distribution at
the same T; both arrive as log-probabilities normalised over their last dimension (the
vocabulary, or the ``k + 1`` buckets of a top-k teacher cache). Every function returns one value
per position (the last dimension summed away); the objective reduces and scales it as it does the
KL (``(1 - alpha) * T^2 * D``). Computed in float32, or float64 if an input is float64.

- ``forward_kl``: ``KL(p || q) = sum p (log p - log q)`` (BabyLlama, the paper).
- ``reverse_kl``: ``KL(q || p) = sum q (log q - log p)``.
- ``skew_kl`` (DistiLLM, Ko et al., ICML 2024): ``KL(p || a p + (1 - a) q)``. With ``a = 0``
  it is the forward KL; a larger ``a`` mixes the teacher into the student's side, which keeps the
  divergence and its gradient bounded where ``q`` is near 0. DistiLLM uses ``a = 0.1``.
- ``skew_reverse_kl`` (DistiLLM): ``KL(q || a q + (1 - a) p)``.
- ``jsd``, the generalized Jensen-Shannon divergence (GKD, Agarwal et al., ICLR 2024; TRL's
  `GKDTrainer`): ``b KL(p || m) + (1 - b) KL(q || m)`` with ``m = b p + (1 - b) q``. Small ``b``
  is forward-KL-like (``m`` near ``q``: the value is about ``b KL(p || q)``), ``b`` near 1
  reverse-KL-like (about ``(1 - b) KL(q || p)``). That is TRL's convention (its ``beta``); Liger's
  JSD kernel names the opposite weight ``beta``, so its ``beta = 0.1`` is this ``b = 0.9``. ``b``
  must lie strictly inside (0, 1): at the ends the value is 0 (TRL substitutes the plain KLs
  there; use ``forward_kl`` or ``reverse_kl`` for those).
- ``taid`` (TAID, Shing et al., ICLR 2025): ``KL(p_t || q)`` with the moving target
  ``p_t = softmax((1 - t) sg(log q) + t log p)`` (sg: no gradient; per position the constants of
  the log-softmaxes cancel, so these are the interpolated logits). ``t`` starts at ``t_start``
  (0.4) and moves towards ``t_end`` (1) by `TaidSchedule`. The gradient with respect to the
  student's logits is ``(q - p_t) / T``, as for a forward KL against a fixed target.

A teacher cache holds less than ``p``: the sampled cache holds k draws from ``p`` and ``p`` at
them, which estimate ``E_p[...]`` without bias, so it serves the divergences that are an
expectation under ``p`` of quantities known at the draws (``forward_kl``, ``skew_kl``:
`sampled_divergence`); the others need ``p`` where the student puts mass. The top-k cache's
``k + 1`` buckets are two proper distributions, so every divergence is defined on them
(`bucket_log_probs`, then `divergence`): exact on the buckets, the shape of the tail left free.
`cache_refusal` says which combinations are refused and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

DivergenceName = Literal["forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl", "jsd", "taid"]
DIVERGENCES: tuple[str, ...] = (
    "forward_kl",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "jsd",
    "taid",
)
SAMPLED_SERVES = ("forward_kl", "skew_kl")
"""What a sampled (or hybrid: sampled tail) cache can estimate: expectations under ``p``."""


@dataclass(frozen=True)
class DivergenceSpec:
    """Which divergence, with its parameter."""

    name: DivergenceName = "forward_kl"
    skew_alpha: float = 0.1
    """``a`` of skew_kl and skew_reverse_kl, in [0, 1)."""
    jsd_beta: float = 0.5
    """``b`` of jsd, in (0, 1)."""

    def __post_init__(self) -> None:
        if self.name not in DIVERGENCES:
            raise ValueError(
                f"divergence must be one of {', '.join(DIVERGENCES)}, got {self.name!r}"
            )
        if not 0.0 <= self.skew_alpha < 1.0:
            raise ValueError(f"skew_alpha must lie in [0, 1), got {self.skew_alpha}")
        if not 0.0 < self.jsd_beta < 1.0:
            raise ValueError(f"jsd_beta must lie in (0, 1), got {self.jsd_beta}")


def _dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``sum a (log a - log b)`` over the last dimension, exactly 0 where ``a = 0`` (value and
    gradient free of NaN: the difference is zeroed before the product)."""
    empty = torch.isneginf(log_a)
    diff = torch.where(empty, torch.zeros_like(log_a), log_a - log_b)
    return torch.where(empty, torch.zeros_like(log_a), log_a.exp() * diff).sum(dim=-1)


def _mix(log_a: Tensor, log_b: Tensor, weight: float) -> Tensor:
    """``log(weight a + (1 - weight) b)`` without leaving log space (``weight`` in [0, 1])."""
    if weight == 0.0:
        return log_b
    if weight == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))


def taid_target(log_p: Tensor, log_q: Tensor, t: float) -> Tensor:
    """``log softmax((1 - t) sg(log q) + t log p)``: TAID's interpolated target (no gradient)."""
    with torch.no_grad():
        return torch.log_softmax((1.0 - t) * log_q.detach() + t * log_p, dim=-1)


def divergence(
    log_p: Tensor, log_q: Tensor, spec: DivergenceSpec, taid_t: float | None = None
) -> Tensor:
    """Per-position ``D(p, q)`` (see the module's docstring) of two log-distributions over the
    last dimension; ``taid_t`` is TAID's current ``t`` (required for ``taid``)."""
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p {tuple(log_p.shape)} and log_q {tuple(log_q.shape)} differ")
    dtype = _dtype(log_p, log_q)
    log_p, log_q = log_p.to(dtype), log_q.to(dtype)
    name = spec.name
    if name == "forward_kl":
        return _kl(log_p, log_q)
    if name == "reverse_kl":
        return _kl(log_q, log_p)
    if name == "skew_kl":
        return _kl(log_p, _mix(log_p, log_q, spec.skew_alpha))
    if name == "skew_reverse_kl":
        return _kl(log_q, _mix(log_q, log_p, spec.skew_alpha))
    if name == "jsd":
        b = spec.jsd_beta
        log_m = _mix(log_p, log_q, b)
        return b * _kl(log_p, log_m) + (1.0 - b) * _kl(log_q, log_m)
    if taid_t is None:
        raise ValueError("taid needs its current t (taid_t)")
    return _kl(taid_target(log_p, log_q, taid_t), log_q)


def sampled_divergence(sample_log_p: Tensor, drawn_log_q: Tensor, spec: DivergenceSpec) -> Tensor:
    """Per-position estimate from k draws of ``p``: ``sample_log_p`` ``[..., k]`` is ``log p`` at
    the draws, ``drawn_log_q`` ``log q`` at the same tokens. ``forward_kl``: ``mean_j (log p -
    log q)``; ``skew_kl``: ``mean_j (log p - log(a p + (1 - a) q))``. Both are unbiased, and so are
    their gradients (the draws do not depend on the student)."""
    if spec.name not in SAMPLED_SERVES:
        raise ValueError(f"{spec.name} cannot be estimated from draws of the teachers")
    dtype = _dtype(sample_log_p, drawn_log_q)
    log_p, log_q = sample_log_p.to(dtype), drawn_log_q.to(dtype)
    if spec.name == "skew_kl":
        log_q = _mix(log_p, log_q, spec.skew_alpha)
    return (log_p - log_q).mean(dim=-1)


def bucket_log_probs(
    top_indices: Tensor,
    top_log_probs: Tensor,
    rest_log_prob: Tensor,
    student_logits: Tensor,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """The teacher's and the student's log-distributions over the ``k + 1`` buckets of a top-k
    cache (the k cached tokens, then the rest), ``[..., k + 1]`` each. The student's rest is a
    ``logsumexp`` over the other tokens, never ``1 - sum``, which cancels when the top-k hold
    nearly all of its mass."""
    dtype = _dtype(top_log_probs, student_logits)
    scaled = student_logits.to(dtype) / temperature
    log_norm = torch.logsumexp(scaled, dim=-1, keepdim=True)
    student_top = scaled.gather(-1, top_indices) - log_norm
    student_rest = torch.logsumexp(scaled.scatter(-1, top_indices, float("-inf")), dim=-1)
    student = torch.cat([student_top, (student_rest - log_norm.squeeze(-1)).unsqueeze(-1)], -1)
    teacher = torch.cat([top_log_probs.to(dtype), rest_log_prob.to(dtype).unsqueeze(-1)], -1)
    return teacher, student


def cache_refusal(name: str, selection: str, tail: str) -> str | None:
    """Why a teacher cache of ``selection`` (topk, sample, hybrid) with ``tail`` cannot serve
    divergence ``name``, or None when it can."""
    if selection in ("sample", "hybrid") and name not in SAMPLED_SERVES:
        return (
            f"divergence={name} needs the teachers' probabilities wherever the student puts mass, "
            f"and a {selection} cache holds them only at tokens drawn from the teachers (it "
            "estimates forward_kl and skew_kl); use cache_selection=topk (exact on the top-k "
            "tokens plus one bucket for the rest) or teacher_cache=false"
        )
    if selection == "hybrid" and name != "forward_kl":
        return f"divergence={name}: the hybrid cache serves forward_kl only; use sample or topk"
    if selection == "topk" and tail == "uniform" and name != "forward_kl":
        return f"cache_tail=uniform is defined for forward_kl only, not divergence={name}"
    return None


class TaidSchedule:
    """TAID's ``t``: it starts at ``t_start`` and rises towards ``t_end`` (TAID, ICLR 2025,
    Algorithm 1). After each training step's loss ``J``: the relative change ``r = (J_prev - J) /
    J_prev``, a momentum ``m <- momentum m + (1 - momentum) r``, then ``t <- min(t_end, max(
    t_linear, t + step sigmoid(m) (1 - t)))`` with ``t_linear = t_start + (t_end - t_start) *
    progress``: t moves faster while the loss falls fast, and never lags the linear schedule.
    The first call only records ``J``. Its state goes into every checkpoint (`state_dict`)."""

    def __init__(self, t_start: float, t_end: float, momentum: float, step: float) -> None:
        if not 0.0 <= t_start < t_end <= 1.0:
            raise ValueError(f"TAID needs 0 <= t_start < t_end <= 1, got {t_start}, {t_end}")
        self.t_start, self.t_end, self.momentum, self.step = t_start, t_end, momentum, step
        self.t = t_start
        self.previous: float | None = None
        self.velocity = 0.0

    def update(self, loss: float, progress: float) -> None:
        """Move ``t`` after a step with loss ``loss``, ``progress`` (0 to 1) through the run."""
        if self.previous is None or not math.isfinite(self.previous):
            self.previous = loss
            return
        relative = (self.previous - loss) / (self.previous + 1e-15)
        self.velocity = self.momentum * self.velocity + (1.0 - self.momentum) * relative
        adaptive = self.step * (1.0 / (1.0 + math.exp(-self.velocity))) * (1.0 - self.t)
        linear = self.t_start + (self.t_end - self.t_start) * min(max(progress, 0.0), 1.0)
        self.t = min(self.t_end, max(linear, self.t + adaptive))
        self.previous = loss

    def state_dict(self) -> dict[str, float | None]:
        return {"t": self.t, "previous": self.previous, "velocity": self.velocity}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.t = float(state["t"])  # type: ignore[arg-type]
        self.previous = state["previous"]
        self.velocity = float(state["velocity"])  # type: ignore[arg-type]
