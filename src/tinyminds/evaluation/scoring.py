"""Scoring continuations with a causal LM exactly as the BabyLM 2024 pipeline does, but batched.

A request is a pair of token lists (context, continuation); its score is the sum of the float32
log-probabilities of the continuation's tokens given everything before them. The official pipeline
(a fork of lm-evaluation-harness) computes the same sums one sentence at a time; here requests are
sorted by length (longest first, so a batch holds sequences of similar length and the first batch
shows at once whether memory suffices), right-padded with an attention mask, and scored many at a
time. Right padding leaves every real token's positions and attention unchanged, so the sums are
those of the unpadded sequences up to float rounding (checked against a one-at-a-time reference in
the tests).

Memory: the model is asked for the logits of the last positions only (``logits_to_keep``, where the
model supports it), and the float32 log-softmax is computed on the positions that are scored,
gathered out of the logits, never on a full-vocabulary float32 copy of the whole batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tinyminds.console import progress
from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import Pair

Request = tuple[list[int], list[int]]
"""(context token ids, continuation token ids)."""


@dataclass(frozen=True)
class PrefixToken:
    """The token an empty context is replaced by (BLiMP and the supplement condition on it)."""

    kind: str
    """``BOS``, ``EOS`` or ``PAD``: which of the tokenizer's special tokens it is."""
    token: str
    id: int

    def describe(self) -> str:
        return f"{self.token} ({self.kind}, id {self.id})"


def prefix_token(
    tokenizer: PreTrainedTokenizerBase, model_dir: object = "the model"
) -> PrefixToken:
    """BOS if the tokenizer has one, else EOS, else PAD (SPEC §4), or a `UserError` saying why none.

    lm-evaluation-harness conditions a sentence with an empty context on BOS, falling back to EOS;
    PAD is the last resort SPEC §4 adds for tokenizers with neither.
    """
    for kind in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            return PrefixToken(
                kind.upper(), str(getattr(tokenizer, f"{kind}_token")), int(token_id)
            )
    raise UserError(
        f"{model_dir}: the tokenizer has no BOS, EOS or PAD token, so BLiMP and supplement "
        f"sentences have no prefix token to be conditioned on; give it one (tokenizer.bos_token = "
        f"...) and save it"
    )


def needs_prefix(pairs: list[Pair]) -> bool:
    """Whether any pair has an empty context (all of BLiMP and the supplement; EWoK normally none)."""
    return any(not pair.context.rstrip() for pair in pairs)


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, never with special tokens (a Llama tokenizer would add BOS)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def build_requests(
    tokenizer: PreTrainedTokenizerBase,
    items: list[tuple[str, str]],
    prefix: PrefixToken | None,
) -> list[Request]:
    """Turn (context, continuation) texts into token requests the way lm-evaluation-harness does.

    An empty context becomes ``[prefix token]`` and the continuation is encoded alone (the
    harness's ``loglikelihood`` for BLiMP, whose context is ``""``). A non-empty context follows the
    harness's ``HFLM._encode_pair``: trailing spaces of the context move to the front of the
    continuation, ``context + continuation`` and ``context`` are encoded, and the continuation is
    the whole encoding after the context's tokens, so the tokens scored are exactly those the model
    sees when reading the whole text (a BPE merge across the boundary cannot go unnoticed). No
    special token is ever added: the harness encodes with ``add_special_tokens=False`` for causal
    LMs, and a Llama-style tokenizer adding BOS changes hundreds of EWoK decisions (SPEC §4).
    """
    contexts: list[str] = []
    continuations: list[str] = []
    for context, continuation in items:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        contexts.append(context)
        continuations.append(continuation)
    empty = [i for i, context in enumerate(contexts) if not context]
    full = [i for i, context in enumerate(contexts) if context]
    if empty and prefix is None:
        raise ValueError("an empty context needs a prefix token (see prefix_token)")
    requests: list[Request] = [([], [])] * len(items)
    for i, ids in zip(empty, _encode(tokenizer, [continuations[i] for i in empty]), strict=True):
        requests[i] = ([prefix.id], ids)  # type: ignore[union-attr]
    context_ids = _encode(tokenizer, [contexts[i] for i in full])
    whole_ids = _encode(tokenizer, [contexts[i] + continuations[i] for i in full])
    for i, context_enc, whole in zip(full, context_ids, whole_ids, strict=True):
        requests[i] = (whole[: len(context_enc)], whole[len(context_enc) :])
    return requests


def pair_requests(
    tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], prefix: PrefixToken | None
) -> list[Request]:
    """Requests for every pair's good sentence, then every pair's bad one (``" " + text`` each)."""
    items = [(p.context, " " + p.good) for p in pairs] + [(p.context, " " + p.bad) for p in pairs]
    return build_requests(tokenizer, items, prefix)


def model_max_length(model: nn.Module) -> int | None:
    """The number of positions the model can attend to, read from its config as the harness does."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def score_requests(
    model: nn.Module,
    requests: list[Request],
    batch_size: int = 64,
    description: str = "score",
) -> list[float]:
    """The sum of the float32 log-probabilities of each request's continuation, in the order given.

    The sum itself is taken in float64 (the harness sums in float32): a 60-token sentence then
    loses no digits to rounding, and scores match a one-at-a-time reference to 1e-4. A sequence longer than the model's positions keeps its last tokens (the harness's left
    truncation). Identical requests are scored once, so two identical sentences always tie
    exactly, whatever batch or padding they would have been given.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    limit = model_max_length(model)
    # Deduplicate: (all tokens, continuation length) identifies a request's score.
    unique: dict[tuple[tuple[int, ...], int], int] = {}
    owners: list[int] = []
    for context, continuation in requests:
        key = (tuple(context + continuation), len(continuation))
        owners.append(unique.setdefault(key, len(unique)))
    keys = list(unique)
    scores = [0.0] * len(keys)

    # (unique index, input ids, targets, number of scored tokens), longest input first.
    rows: list[tuple[int, list[int], list[int], int]] = []
    for index, (tokens, n_continuation) in enumerate(keys):
        window = list(tokens if limit is None else tokens[-(limit + 1) :])
        inputs, targets = window[:-1], window[1:]
        n_scored = min(n_continuation, len(inputs))
        if n_scored > 0:  # an empty continuation scores 0
            rows.append((index, inputs, targets, n_scored))
    rows.sort(key=lambda row: -len(row[1]))

    device = next(model.parameters()).device
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    bar = progress(len(rows), description, unit="seq")
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                for (index, *_), total in zip(
                    batch, _score_batch(model, batch, device, keeps_logits), strict=True
                ):
                    scores[index] = total
                bar.update(len(batch))
    finally:
        bar.close()
    return [scores[owner] for owner in owners]


def _score_batch(
    model: nn.Module,
    batch: list[tuple[int, list[int], list[int], int]],
    device: torch.device,
    keeps_logits: bool,
) -> list[float]:
    """One forward pass over right-padded sequences; the continuation log-prob sum of each row."""
    width = max(len(inputs) for _, inputs, _, _ in batch)
    padded, mask = [], []
    rows, columns, targets = [], [], []
    for row, (_, inputs, row_targets, n_scored) in enumerate(batch):
        length = len(inputs)
        padded.append(inputs + [0] * (width - length))  # pad id 0: masked out, never scored
        mask.append([1] * length + [0] * (width - length))
        rows.extend([row] * n_scored)
        columns.extend(range(length - n_scored, length))
        targets.extend(row_targets[length - n_scored :])
    kwargs: dict[str, object] = {"use_cache": False}  # no key/value cache: one pass, no generation
    if keeps_logits:
        # Only positions from the earliest scored one onwards are needed (a long EWoK context
        # needs no logits): the last `width - first` positions of every row.
        first = min(columns)
        kwargs["logits_to_keep"] = width - first
    input_ids = torch.tensor(padded, device=device)
    attention_mask = torch.tensor(mask, device=device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
    offset = width - logits.shape[1]
    row_index = torch.tensor(rows, device=device)
    column_index = torch.tensor(columns, device=device) - offset
    target_index = torch.tensor(targets, device=device)
    selected = logits[row_index, column_index].float()  # [scored tokens, vocab], float32
    token_log_probs = selected.log_softmax(-1).gather(1, target_index[:, None]).squeeze(1)
    totals = torch.zeros(len(batch), dtype=torch.float64, device=device)
    totals.index_add_(0, row_index, token_log_probs.double())
    return totals.tolist()
