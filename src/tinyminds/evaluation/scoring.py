"""Scoring continuations with a causal LM exactly as the BabyLM 2024 pipeline does, but batched.

A request is a pair of token lists (context, continuation); its score is the sum of the float32
log-probabilities of the continuation's tokens given everything before them. The official pipeline
(a fork of lm-evaluation-harness) computes the same sums one sentence at a time. Here each forward
pass scores many sequences, and the work they have in common is done once:

* **Shared prefixes** (the default): sequences are sorted lexicographically and packed into prefix
  trees ("packs") of at most ``PACK_NODES`` tokens; a token position shared by several sequences
  (the prefix token and " The" of thousands of BLiMP sentences, the common start of a minimal
  pair, an EWoK context and its two targets) is one node, computed once. A node attends to its
  ancestors only (a 4D attention mask) at the position it has in its sequences (its depth), so its
  hidden state is the one the sequence alone would give. BLiMP then needs 61% of its token
  positions, EWoK 47%. A model that does not honour a 4D mask and explicit position ids (the
  check scores a few sequences both ways) is scored the plain way instead.
* **Plain**: sequences of equal length batched together, no padding and so no attention mask.

Either way the output embedding (the LM head) is applied only at the positions whose next token is
scored (a forward pre-hook hands it those hidden states only): EWoK contexts and pack padding cost
no head and no softmax, and the float32 log-softmax never sees a whole batch's logits. The sums
equal those of the unpadded sequences one at a time up to float rounding (checked against a
one-at-a-time reference in the tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tinyminds.console import info, progress
from tinyminds.devices import to_device
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
    """Token ids of each text, never with special tokens (a Llama tokenizer would add BOS).

    A fast tokenizer's Rust backend is called directly: ``tokenizer(texts)`` runs the same
    ``encode_batch`` and then builds a `BatchEncoding`, which takes a third of the time on BLiMP.
    The first texts are encoded both ways, and any difference falls back to the tokenizer itself.
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None
    if backend is not None:
        # encode_batch_fast skips the character offsets nobody reads here.
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        ids = [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
        if ids[:8] == _encode_slowly(tokenizer, texts[:8]):
            return ids
    return _encode_slowly(tokenizer, texts)


def _encode_slowly(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
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


CONVENTIONS = ("2024", "2025")
"""How minimal pairs are scored: ``2024`` as lm-evaluation-harness does for the BabyLM 2024
pipeline and the paper (SPEC §4: a prefix token before a sentence, every token of ``" " +
sentence`` scored); ``2025`` as the BabyLM 2025 pipeline does (SPEC-2025 §1: the sentence alone,
its first token never scored, EWoK's target picked out by character offsets)."""


def temperature_grid(low: float, high: float, step: float) -> tuple[float, ...]:
    """The 2025 pipeline's sweep: ``arange(low, high + step, step)``, each at least 1e-6
    (SPEC-2025 §1.6), rounded to 10 decimals against float drift."""
    if not (low > 0 and high >= low and step > 0):
        raise UserError(
            f"--temperature-sweep {low},{high},{step}: need 0 < MIN <= MAX and STEP > 0"
        )
    count = int(np.floor((high - low) / step + 1e-9)) + 1
    return tuple(max(round(low + i * step, 10), 1e-6) for i in range(count))


def sweep_record(temperatures: tuple[float, ...], scores: list[float]) -> dict[str, object]:
    """A task's temperature sweep, reported apart from its T = 1 headline: the T with the highest
    score (strict ``>``: the lowest T wins a tie, as the pipeline's loop does)."""
    best = 0
    for index, score in enumerate(scores):
        if score > scores[best]:
            best = index
    return {
        "temperatures": list(temperatures),
        "scores": scores,
        "best_temperature": temperatures[best],
        "best_score": scores[best],
    }


def completion_requests(
    tokenizer: PreTrainedTokenizerBase, items: list[tuple[str, str]]
) -> list[Request]:
    """Requests for (sentence, completion) items under the BabyLM 2025 ranking rule (SPEC-2025 §1).

    The sentence is tokenised alone with the tokenizer's default special tokens and character
    offsets; a token belongs to the completion (a suffix of the sentence) when its end offset is
    past ``len(sentence) - len(completion)`` (special tokens, offsets (0, 0), never do). The causal
    shift leaves token 0 unscored: a whole-sentence completion (BLiMP) loses its first token unless
    the tokenizer adds a BOS. Tokens after the completion (an EOS a post-processor appends) are
    dropped: they cannot change the scores before them. As a request: the context is every token
    before the first scored one, the continuation the scored tokens.
    """
    if not tokenizer.is_fast:
        raise UserError(
            "the 2025 convention needs a fast tokenizer (character offsets pick the completion's "
            "tokens); this model's tokenizer is a slow one"
        )
    requests: list[Request] = []
    encodings = tokenizer(  # verbose=False: a sentence past the model's positions is cut below
        [sentence for sentence, _ in items],
        return_offsets_mapping=True,
        add_special_tokens=True,
        verbose=False,
    )
    for (sentence, completion), ids, offsets in zip(
        items, encodings["input_ids"], encodings["offset_mapping"], strict=True
    ):
        if not sentence.endswith(completion):
            raise ValueError("a completion must be a suffix of its sentence")
        start = len(sentence) - len(completion)
        inside = [end > start and (begin, end) != (0, 0) for begin, end in offsets]
        if not any(inside[1:]):  # nothing scored: a one-token sentence
            requests.append((list(ids), []))
            continue
        first = max(1, inside.index(True))
        last = len(inside) - 1 - inside[::-1].index(True)
        requests.append((list(ids[:first]), list(ids[first : last + 1])))
    return requests


def pair_requests_2025(tokenizer: PreTrainedTokenizerBase, pairs: list[Pair]) -> list[Request]:
    """`pair_requests` under the 2025 rule: a pair without context is two whole-sentence
    completions (BLiMP, the supplement); with a context (EWoK) the sentence is ``context + " " +
    target`` and the completion ``" " + target``."""
    items = []
    for side in ("good", "bad"):
        for pair in pairs:
            text = getattr(pair, side)
            if pair.context:
                items.append((f"{pair.context} {text}", f" {text}"))
            else:
                items.append((text, text))
    return completion_requests(tokenizer, items)


def model_max_length(model: nn.Module) -> int | None:
    """The number of positions the model can attend to, read from its config as the harness does."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


PACK_NODES = 128
"""Token positions per prefix tree. A larger pack shares more, but its positions attend to each
other densely (masked): on the CPU 128 was fastest for a 128-wide GPT-2 and as fast as 256 and 512
for GPT2-44M (benchmarks/README.md)."""

SHARE_ON_GPU_PARAMETERS = 10_000_000
"""From this size on, prefix sharing is used on a GPU too: the positions it saves cost more than
building the trees (BLiMP + supplement + EWoK on an H200: see benchmarks/README.md)."""

CHECK_SEQUENCES = 16
"""Sequences scored both with and without prefix sharing before a task is scored with it."""


@dataclass(frozen=True)
class _Sequence:
    """One distinct request as the model reads it."""

    index: int
    """Its place among the distinct requests."""
    tokens: tuple[int, ...]
    """The model's inputs followed by the last target (at most the model's positions + 1 tokens)."""
    n_scored: int
    """Its last ``n_scored`` tokens are scored (the continuation, or what truncation left of it)."""


@dataclass
class _Batch:
    """One forward pass: the model's inputs, and which log-probabilities each sequence sums."""

    sequences: list[int]
    """The distinct-request index of each sequence in the batch (its slot)."""
    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    rows: torch.Tensor
    columns: torch.Tensor
    """(rows, columns): the distinct positions whose next-token distribution is needed."""
    position: torch.Tensor
    """For each scored token: its position's index in (rows, columns)."""
    targets: torch.Tensor
    """For each scored token: its id."""
    slots: torch.Tensor
    """For each scored token: the slot of the sequence whose score it adds to."""


def score_requests(
    model: nn.Module,
    requests: list[Request],
    batch_size: int = 64,
    description: str = "score",
    share_prefixes: bool | None = None,
    pack_nodes: int = PACK_NODES,
) -> list[float]:
    """The sum of the float32 log-probabilities of each request's continuation, in the order given
    (`score_requests_at` at temperature 1)."""
    return score_requests_at(
        model, requests, (1.0,), batch_size, description, share_prefixes, pack_nodes
    )[0]


def score_requests_at(
    model: nn.Module,
    requests: list[Request],
    temperatures: tuple[float, ...],
    batch_size: int = 64,
    description: str = "score",
    share_prefixes: bool | None = None,
    pack_nodes: int = PACK_NODES,
) -> list[list[float]]:
    """Per temperature T, the sum of each request's continuation log-probabilities from
    ``log_softmax(logits / T)`` (one forward pass serves every T; the BabyLM 2025 temperature sweep).

    The sum itself is taken in float64 (the harness sums in float32): a 60-token sentence then
    loses no digits to rounding, and scores match a one-at-a-time reference to 1e-4. A sequence
    longer than the model's positions keeps its last tokens (the harness's left truncation).
    Identical requests are scored once, so two identical sentences always tie exactly. A forward
    pass holds at most ``batch_size`` sequences; with ``share_prefixes`` they are packed into
    prefix trees of about ``pack_nodes`` positions (see the module's docstring). ``None`` (the
    default) shares prefixes on the CPU, where the forward pass is the cost, and on a GPU for
    models of at least ``SHARE_ON_GPU_PARAMETERS`` parameters; a smaller model's forward pass on a
    GPU is cheap next to building the trees in Python, and plain batches are built faster. The
    sums stay on the device until the end and the inputs are copied from pinned memory, so the
    next batch is built while the GPU works on this one.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    sequences, owners, n_distinct = _distinct_sequences(model, requests)
    scores = [[0.0] * n_distinct for _ in temperatures]  # an empty continuation scores 0
    device = next(model.parameters()).device
    if share_prefixes is None:
        share_prefixes = (
            device.type == "cpu"
            or sum(p.numel() for p in model.parameters()) >= SHARE_ON_GPU_PARAMETERS
        )
    head = _ScoredPositionsOnly(model)
    done: list[tuple[torch.Tensor, torch.Tensor]] = []  # (distinct indices, sums) per batch
    bar = progress(len(sequences), description, unit="seq")
    try:
        with torch.inference_mode():
            if share_prefixes and not _packs_are_exact(model, sequences, pack_nodes, head, device):
                info(
                    f"{type(model).__name__} does not honour a 4D attention mask with position "
                    f"ids; scoring without prefix sharing"
                )
                share_prefixes = False
            batches = (
                _tree_batches(sequences, batch_size, pack_nodes)
                if share_prefixes
                else _plain_batches(sequences, batch_size)
            )
            for batch in batches:
                totals = _run(model, batch, head, device, temperatures)
                done.append((torch.tensor(batch.sequences), totals))
                bar.update(len(batch.sequences))
            if done:
                indices = torch.cat([index for index, _ in done]).tolist()
                sums = torch.cat([total for _, total in done], dim=1).tolist()  # one device sync
                for row, per_temperature in zip(scores, sums, strict=True):
                    for index, total in zip(indices, per_temperature, strict=True):
                        row[index] = total
    finally:
        head.remove()
        bar.close()
    return [[row[owner] for owner in owners] for row in scores]


def _distinct_sequences(
    model: nn.Module, requests: list[Request]
) -> tuple[list[_Sequence], list[int], int]:
    """The distinct non-empty sequences, which distinct request each request is, and how many.

    (All tokens, continuation length) identifies a request's score.
    """
    limit = model_max_length(model)
    distinct: dict[tuple[tuple[int, ...], int], int] = {}
    owners = [
        distinct.setdefault((tuple(context + continuation), len(continuation)), len(distinct))
        for context, continuation in requests
    ]
    sequences = []
    for index, (tokens, n_continuation) in enumerate(distinct):
        window = tokens if limit is None else tokens[-(limit + 1) :]
        n_scored = min(n_continuation, len(window) - 1)
        if n_scored > 0:
            sequences.append(_Sequence(index, window, n_scored))
    return sequences, owners, len(distinct)


def _plain_batches(sequences: list[_Sequence], batch_size: int) -> Iterator[_Batch]:
    """Sequences of one length at a time, longest first: no padding, so no attention mask."""
    ordered = sorted(sequences, key=lambda s: -len(s.tokens))
    start = 0
    while start < len(ordered):
        length = len(ordered[start].tokens)
        stop = start + 1
        while (
            stop < len(ordered)
            and stop - start < batch_size
            and len(ordered[stop].tokens) == length
        ):
            stop += 1
        batch = ordered[start:stop]
        tokens = torch.tensor([s.tokens for s in batch])
        # Row r scores its last n_scored[r] inputs: columns length-1-n .. length-2.
        n_scored = torch.tensor([s.n_scored for s in batch])
        row_index = torch.repeat_interleave(torch.arange(len(batch)), n_scored)
        ends = torch.cumsum(n_scored, 0)
        offset_in_row = torch.arange(int(ends[-1])) - torch.repeat_interleave(
            ends - n_scored, n_scored
        )
        column_index = length - 1 - torch.repeat_interleave(n_scored, n_scored) + offset_in_row
        yield _Batch(
            sequences=[s.index for s in batch],
            input_ids=tokens[:, :-1],
            position_ids=None,
            attention_mask=None,
            rows=row_index,
            columns=column_index,
            position=torch.arange(len(row_index)),
            targets=tokens[row_index, column_index + 1],
            slots=row_index,
        )
        start = stop


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _packs(
    sequences: list[_Sequence], batch_size: int, pack_nodes: int
) -> list[list[tuple[_Sequence, int]]]:
    """Sequences in lexicographic order of their inputs, cut greedily into prefix trees.

    Each sequence comes with the number of leading inputs it shares with the one before it in its
    pack: in lexicographic order that is the longest prefix it shares with any earlier one, i.e.
    the part of it already in the tree. A pack holds at most ``batch_size`` sequences and at most
    ``pack_nodes`` distinct positions, or twice its first sequence's length when that is more: a
    long context with short completions (entity tracking: ~165 shared tokens, five 5-token
    options) then shares its context instead of filling one pack per option.
    """
    packs: list[list[tuple[_Sequence, int]]] = []
    current: list[tuple[_Sequence, int]] = []
    nodes, budget = 0, pack_nodes
    previous: tuple[int, ...] = ()
    for sequence in sorted(sequences, key=lambda s: s.tokens[:-1]):
        inputs = sequence.tokens[:-1]
        shared = _common_prefix(previous, inputs) if current else 0
        if current and (nodes + len(inputs) - shared > budget or len(current) == batch_size):
            packs.append(current)
            current, nodes, shared = [], 0, 0
        if not current:
            budget = max(pack_nodes, 2 * len(inputs))
        current.append((sequence, shared))
        nodes += len(inputs) - shared
        previous = inputs
    if current:
        packs.append(current)
    return packs


def _tree_batches(sequences: list[_Sequence], batch_size: int, pack_nodes: int) -> Iterator[_Batch]:
    """Packs, as many per forward pass as hold at most ``batch_size`` sequences together."""
    packs = _packs(sequences, batch_size, pack_nodes)
    start = 0
    while start < len(packs):
        stop, count = start + 1, len(packs[start])
        while stop < len(packs) and count + len(packs[stop]) <= batch_size:
            count += len(packs[stop])
            stop += 1
        yield _tree_batch(packs[start:stop])
        start = stop


def _tree_batch(packs: list[list[tuple[_Sequence, int]]]) -> _Batch:
    """One row per pack: its tree's nodes in insertion order, which is depth-first order.

    A node's position id is its depth (its position in every sequence through it) and it attends
    to exactly the nodes on its path from the root, as the same token in the sequence alone
    attends to the tokens before it. In depth-first order a node's descendants are the nodes after
    it up to the last one of its subtree, ``last[node]``, so ``node`` attends to ``other`` exactly
    when ``other <= node <= last[other]``. Rows are right-padded; padding nodes attend to
    themselves only.
    """
    width = max(sum(len(s.tokens) - 1 - shared for s, shared in pack) for pack in packs)
    tokens = np.zeros((len(packs), width), dtype=np.int64)
    depths = np.zeros((len(packs), width), dtype=np.int64)
    last = np.tile(np.arange(width, dtype=np.int64), (len(packs), 1))
    members: list[_Sequence] = []
    rows: list[int] = []  # for each scored token: its node (row, column), target and sequence
    columns: list[int] = []
    targets: list[int] = []
    slots: list[int] = []
    for row, pack in enumerate(packs):
        row_tokens: list[int] = []
        row_depths: list[int] = []
        row_last: list[int] = []
        path: list[int] = []  # the node of each input of the sequence before
        for sequence, shared in pack:
            inputs = sequence.tokens[:-1]
            count = len(row_tokens)
            for node in path[shared:]:  # sorted: no later sequence goes through these nodes
                row_last[node] = count - 1
            path = path[:shared] + list(range(count, count + len(inputs) - shared))
            row_tokens.extend(inputs[shared:])
            row_depths.extend(range(shared, len(inputs)))
            row_last.extend([count] * (len(inputs) - shared))  # set when the subtree closes
            n = sequence.n_scored
            rows.extend([row] * n)
            columns.extend(path[len(path) - n :])
            targets.extend(sequence.tokens[len(sequence.tokens) - n :])
            slots.extend([len(members)] * n)
            members.append(sequence)
        for node in path:
            row_last[node] = len(row_tokens) - 1
        tokens[row, : len(row_tokens)] = row_tokens
        depths[row, : len(row_depths)] = row_depths
        last[row, : len(row_last)] = row_last
    node = torch.arange(width)
    subtree_end = torch.from_numpy(last)[:, None, :]
    attends = (node[None, :] <= node[:, None]) & (
        node[:, None] <= subtree_end
    )  # [row, node, other]
    flat = np.asarray(rows, dtype=np.int64) * width + np.asarray(columns, dtype=np.int64)
    distinct, position = np.unique(flat, return_inverse=True)  # a shared node: one head row
    return _Batch(
        sequences=[s.index for s in members],
        input_ids=torch.from_numpy(tokens),
        position_ids=torch.from_numpy(depths),
        attention_mask=attends[:, None],
        rows=torch.from_numpy(distinct // width),
        columns=torch.from_numpy(distinct % width),
        position=torch.from_numpy(position.reshape(-1)),
        targets=torch.from_numpy(np.asarray(targets, dtype=np.int64)),
        slots=torch.from_numpy(np.asarray(slots, dtype=np.int64)),
    )


class _ScoredPositionsOnly:
    """A forward pre-hook on the model's output embedding that keeps the scored positions only.

    Given the hidden states ``[batch, length, hidden]``, the LM head receives ``[1, positions,
    hidden]``: the logits then exist for the scored positions only, and whatever the model does
    after its head (a scaling, a soft cap) still applies. If the head is never called with hidden
    states of the batch's shape, ``used`` stays False and the full logits are used.
    """

    def __init__(self, model: nn.Module) -> None:
        self.batch: _Batch | None = None
        self.rows = self.columns = torch.empty(0, dtype=torch.long)
        self.used = False
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        self.handle = head.register_forward_pre_hook(self) if isinstance(head, nn.Module) else None

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        hidden = args[0] if args else None
        expected = tuple(self.batch.input_ids.shape) if self.batch is not None else None
        if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape[:2]) != expected:
            return None
        self.used = True
        return (hidden[self.rows, self.columns].unsqueeze(0), *args[1:])

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def _run(
    model: nn.Module,
    batch: _Batch,
    head: _ScoredPositionsOnly,
    device: torch.device,
    temperatures: tuple[float, ...] = (1.0,),
) -> torch.Tensor:
    """One forward pass; per temperature, the float64 sum of each sequence's scored float32
    log-probabilities (``[temperatures, sequences]``), on the device (reading it there would wait
    for the GPU)."""
    inputs: dict[str, torch.Tensor | bool] = {
        "input_ids": to_device(batch.input_ids, device),
        "use_cache": False,  # no key/value cache: one pass, no generation
    }
    if batch.position_ids is not None:
        inputs["position_ids"] = to_device(batch.position_ids, device)
    if batch.attention_mask is not None:
        # Additive, as the models' own 4D masks are: eager and SDPA attention both take it.
        dtype = next(model.parameters()).dtype
        allowed = to_device(batch.attention_mask, device)
        inputs["attention_mask"] = torch.zeros(allowed.shape, dtype=dtype, device=device)
        inputs["attention_mask"].masked_fill_(~allowed, torch.finfo(dtype).min)
    rows, columns = to_device(batch.rows, device), to_device(batch.columns, device)
    head.batch, head.rows, head.columns, head.used = batch, rows, columns, False
    logits = model(**inputs).logits
    selected = (logits[0] if head.used else logits[rows, columns]).float()  # [positions, vocab]
    position, targets = to_device(batch.position, device), to_device(batch.targets, device)
    slots = to_device(batch.slots, device)
    totals = torch.zeros(
        (len(temperatures), len(batch.sequences)), dtype=torch.float64, device=device
    )
    for row, temperature in enumerate(temperatures):
        scaled = selected if temperature == 1.0 else selected / temperature
        token_log_probs = scaled.log_softmax(-1)[position, targets]
        totals[row].index_add_(0, slots, token_log_probs.double())
    return totals


def _packs_are_exact(
    model: nn.Module,
    sequences: list[_Sequence],
    pack_nodes: int,
    head: _ScoredPositionsOnly,
    device: torch.device,
) -> bool:
    """Whether the first sequences (in lexicographic order: sharing prefixes) score the same in
    a pack as alone. A model that ignores a 4D mask or explicit position ids fails this by far
    more than float rounding; one that refuses them (an error) fails it too."""
    sample = sorted(sequences, key=lambda s: s.tokens[:-1])[:CHECK_SEQUENCES]
    if not sample:
        return True
    packed: dict[int, float] = {}
    try:
        for batch in _tree_batches(sample, len(sample), pack_nodes):
            totals = _run(model, batch, head, device)[0].tolist()
            packed.update(zip(batch.sequences, totals, strict=True))
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    for batch in _plain_batches(sample, len(sample)):
        totals = _run(model, batch, head, device)[0].tolist()
        for index, total in zip(batch.sequences, totals, strict=True):
            if abs(packed[index] - total) > 1e-3:
                return False
    return True
