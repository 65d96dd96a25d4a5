"""The batched scorer against a brute-force reference, on tiny random GPT-2 and Llama models.

The reference scores one sequence at a time, without padding, with a plain
``model(ids).logits.log_softmax(-1)``, and tokenizes on its own (``[BOS] + " sentence"`` for BLiMP,
context and ``" " + target`` separately for EWoK), so both the batching and the request building
are checked. The models' weights are drawn wide (std 0.2) so that scores differ by whole nats and a
decision cannot hinge on float rounding.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from tinyminds.data.tokenizer import BOS, BOS_ID, save_tokenizer, train_tokenizer
from tinyminds.evaluation.results import decide
from tinyminds.evaluation.scoring import (
    PACK_NODES,
    _packs,
    _packs_are_exact,
    _ScoredPositionsOnly,
    _Sequence,
    _tree_batch,
    build_requests,
    pair_requests,
    prefix_token,
    score_requests,
)
from tinyminds.evaluation.tasks import Pair, Subtask
from tinyminds.evaluation.zero_shot import score_task
from tinyminds.models.zoo import ModelSpec, build_model

pytestmark = pytest.mark.slow

VOCAB = 300
WORDS = [
    *("the", "a", "cat", "dog", "child", "ball", "red", "blue", "big"),
    *("small", "runs", "sleeps", "sees", "likes", "gave", "house", "tree"),
]


def sentence(n_words: int, seed: int) -> str:
    """A deterministic pseudo-English sentence of ``n_words`` words."""
    words = [WORDS[(seed * 7 + i * (seed + 3)) % len(WORDS)] for i in range(n_words)]
    return " ".join(words).capitalize() + "."


# Minimal pairs of very different lengths (1 to 60 words) in one list: one batch holds them all.
PAIRS = [
    Pair("", sentence(n, n), sentence(n + (n % 3), n + 1)) for n in (1, 2, 3, 5, 8, 13, 21, 34, 60)
]
PAIRS.append(Pair("", "The cat sleeps.", "The cat sleeps."))  # identical: must tie
EWOK_PAIRS = [
    Pair(sentence(n, n + 5), sentence(4, n), sentence(4 + n % 2, n + 2)) for n in (1, 6, 15, 40)
]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [sentence(3 + i % 20, i) for i in range(400)]
    folder = tmp_path_factory.mktemp("eval-tokenizer")
    save_tokenizer(train_tokenizer(lines, vocab_size=VOCAB), folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def tiny_model(arch: str, seed: int = 0) -> PreTrainedModel:
    """A 2-layer, 32-wide model of ``arch`` with wide random weights (confident, varied scores)."""
    torch.manual_seed(seed)
    model = build_model(ModelSpec(f"{arch}-eval", arch, 32, 2, 2, 64, paper=False), VOCAB)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    return model.eval()


def reference_score(model: PreTrainedModel, context: list[int], continuation: list[int]) -> float:
    """log P(continuation | context) one sequence at a time: no batch, no padding, no mask."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        log_probs = model(ids).logits.float().log_softmax(-1)[0]
    start = len(context) - 1  # position p predicts token p + 1
    return sum(float(log_probs[start + j, token]) for j, token in enumerate(continuation))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(
    ("batch_size", "share_prefixes", "pack_nodes"),
    [(64, True, PACK_NODES), (3, True, PACK_NODES), (64, True, 8), (64, False, 0), (3, False, 0)],
)
def test_batched_scores_match_the_one_at_a_time_reference(
    arch: str, batch_size: int, share_prefixes: bool, pack_nodes: int, tokenizer
) -> None:
    """Prefix trees (one pack, several packs per pass, packs smaller than one sentence) and plain
    equal-length batches all give the reference's scores."""
    model = tiny_model(arch)
    prefix = prefix_token(tokenizer)
    assert (prefix.kind, prefix.id) == ("BOS", BOS_ID)
    pairs = PAIRS + EWOK_PAIRS
    requests = pair_requests(tokenizer, pairs, prefix)
    scores = score_requests(
        model, requests, batch_size, share_prefixes=share_prefixes, pack_nodes=pack_nodes
    )
    good, bad = scores[: len(pairs)], scores[len(pairs) :]

    def reference(pair: Pair, text: str) -> float:
        if not pair.context:
            return reference_score(model, [BOS_ID], encode(tokenizer, " " + text))
        return reference_score(
            model, encode(tokenizer, pair.context), encode(tokenizer, " " + text)
        )

    ref_good = [reference(p, p.good) for p in pairs]
    ref_bad = [reference(p, p.bad) for p in pairs]
    assert good == pytest.approx(ref_good, abs=1e-4, rel=0)
    assert bad == pytest.approx(ref_bad, abs=1e-4, rel=0)
    assert decide(good, bad) == decide(ref_good, ref_bad)
    # The lengths really differ (1 to 60 words) and the scores are far from uniform guesses.
    lengths = [len(encode(tokenizer, " " + p.good)) for p in PAIRS]
    assert min(lengths) <= 5 and max(lengths) >= 60
    assert sum(g != b for g, b in zip(good, bad, strict=True)) == len(pairs) - 1


def test_ewok_scores_the_target_only_and_depends_on_the_context(tokenizer) -> None:
    model = tiny_model("gpt2", seed=1)
    context, target = "The big dog sees the ball.", " The dog runs."
    (request,) = build_requests(tokenizer, [(context, target)], prefix=None)
    assert request == (encode(tokenizer, context), encode(tokenizer, target))
    (score,) = score_requests(model, [request])
    assert score == pytest.approx(reference_score(model, *request), abs=1e-4)
    # The context's tokens do not count: the sum over the whole text is the context's plus ours.
    context_ids = request[0]
    whole = reference_score(model, context_ids[:1], context_ids[1:] + request[1])
    context_only = reference_score(model, context_ids[:1], context_ids[1:])
    assert score == pytest.approx(whole - context_only, abs=1e-4)
    assert score > whole + 1.0
    other = build_requests(tokenizer, [("A small cat sleeps.", target)], prefix=None)
    assert score_requests(model, other)[0] != pytest.approx(score, abs=1e-3)
    # lm-evaluation-harness's _encode_pair: a trailing space of the context moves to the target.
    assert build_requests(tokenizer, [(context + " ", "x")], None) == build_requests(
        tokenizer, [(context, " x")], None
    )


def test_a_tokenizer_that_adds_bos_by_default_gets_none_on_ewok(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Llama-style tokenizers add BOS unless told not to; EWoK contexts must never get it."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    raw.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    save_tokenizer(raw, tmp_path)
    llama_style = AutoTokenizer.from_pretrained(str(tmp_path))
    context = "The child likes the red house."
    assert llama_style(context)["input_ids"][0] == BOS_ID  # the premise: BOS by default
    requests = build_requests(llama_style, [(context, " It is big.")], prefix=None)
    assert BOS_ID not in requests[0][0] + requests[0][1]
    assert requests[0][0] == llama_style(context, add_special_tokens=False)["input_ids"]
    # BLiMP's sentence gets exactly one BOS: the prefix token, never one from the tokenizer.
    blimp = pair_requests(llama_style, [Pair("", "A cat.", "A dog.")], prefix_token(llama_style))
    assert [r[0] for r in blimp] == [[BOS_ID], [BOS_ID]]
    assert all(BOS_ID not in r[1] for r in blimp)


def test_identical_sentences_tie_and_count_as_correct(tokenizer) -> None:
    model = tiny_model("llama", seed=2)
    pairs = [Pair("", "The cat sleeps.", "The cat sleeps."), *PAIRS[:4]]
    subtask = Subtask("blimp", "toy", Path("toy.jsonl"), "0" * 64, pairs)
    result = score_task("blimp", [subtask], model, tokenizer, batch_size=2, max_items=None)
    first = result.pairs[0]
    assert first["good"] == first["bad"] and first["tie"] and first["correct"]
    assert result.ties == result.subtasks[0].ties == 1
    assert result.subtasks[0].correct == sum(r["correct"] for r in result.pairs)
    assert result.prefix_token == {"kind": "BOS", "token": BOS, "id": BOS_ID}


def test_sequences_longer_than_the_model_keep_their_last_tokens() -> None:
    """As the harness does: (context + continuation)[-(max_length + 1):][:-1] is fed to the model."""
    torch.manual_seed(3)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=8,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = GPT2LMHeadModel(config).eval()
    context, continuation = [5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]  # 11 tokens > 8 + 1
    (score,) = score_requests(model, [(context, continuation)])
    window = (context + continuation)[-9:]  # 8 inputs; their last 7 predictions are the targets
    with torch.no_grad():
        log_probs = model(torch.tensor([window[:-1]])).logits.log_softmax(-1)[0]
    expected = sum(float(log_probs[p, window[p + 1]]) for p in range(1, 8))
    assert score == pytest.approx(expected, abs=1e-5)


def _sequences(requests: list[tuple[list[int], list[int]]]) -> list[_Sequence]:
    return [_Sequence(i, tuple(c + x), len(x)) for i, (c, x) in enumerate(requests)]


def test_prefix_trees_hold_each_shared_position_once(tokenizer) -> None:
    prefix = prefix_token(tokenizer)
    requests = pair_requests(tokenizer, PAIRS, prefix) + build_requests(
        tokenizer, [(p.context, " " + t) for p in EWOK_PAIRS for t in (p.good, p.bad)], None
    )
    sequences = _sequences(requests)
    inputs = sum(len(s.tokens) - 1 for s in sequences)
    (pack,) = _packs(sequences, batch_size=64, pack_nodes=10_000)
    nodes = sum(len(s.tokens) - 1 - shared for s, shared in pack)
    # Every sentence starts with the prefix token, each EWoK context is shared by two targets.
    assert nodes < inputs - len(PAIRS) - sum(
        len(tokenizer(p.context)["input_ids"]) for p in EWOK_PAIRS
    )
    # Sorted lexicographically: what a sequence shares with the one before it is in the tree.
    for (before, _), (after, shared) in itertools.pairwise(pack):
        assert before.tokens[:shared] == after.tokens[:shared]
        assert before.tokens[:-1] <= after.tokens[:-1]
    # Limits: `batch_size` sequences, and `pack_nodes` positions or twice the first sequence.
    small = _packs(sequences, batch_size=3, pack_nodes=8)
    assert all(len(p) <= 3 for p in small)
    for p in small:
        size = sum(len(s.tokens) - 1 - shared for s, shared in p)
        assert size <= max(8, 2 * (len(p[0][0].tokens) - 1))
    # A long context with short options: the options share one pack (one copy of the context).
    context = list(range(10, 60))
    options = _sequences([(context, [70 + k, 80 + k]) for k in range(5)])
    (shared_pack,) = _packs(options, batch_size=64, pack_nodes=8)
    assert sum(len(s.tokens) - 1 - shared for s, shared in shared_pack) == 50 + 5  # + 1 input each


class _NoMaskGPT2(GPT2LMHeadModel):
    """A model that ignores the attention mask and position ids it is given (as some do)."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


class _NoPositionsGPT2(GPT2LMHeadModel):
    """A model whose forward has no ``position_ids`` argument: passing one is a TypeError."""

    def forward(self, input_ids=None, attention_mask=None, use_cache=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("model_class", [_NoMaskGPT2, _NoPositionsGPT2])
def test_a_model_ignoring_the_4d_mask_is_scored_without_prefix_sharing(
    model_class: type[GPT2LMHeadModel], tokenizer
) -> None:
    torch.manual_seed(4)
    config = GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
    requests = pair_requests(tokenizer, PAIRS[:6], prefix_token(tokenizer))
    head = _ScoredPositionsOnly(model)
    with torch.inference_mode():
        assert not _packs_are_exact(
            model, _sequences(requests), PACK_NODES, head, torch.device("cpu")
        )
        good = tiny_model("gpt2")
        assert _packs_are_exact(
            good, _sequences(requests), 8, _ScoredPositionsOnly(good), torch.device("cpu")
        )
    head.remove()
    scores = score_requests(model, requests)
    expected = [reference_score(model, c, x) for c, x in requests]
    assert scores == pytest.approx(expected, abs=1e-4, rel=0)


def test_the_lm_head_sees_the_scored_positions_only(tokenizer) -> None:
    """EWoK contexts cost no head: it gets one row per distinct scored position."""
    model = tiny_model("gpt2", seed=5)
    requests = build_requests(
        tokenizer, [(p.context, " " + t) for p in EWOK_PAIRS for t in (p.good, p.bad)], None
    )
    head_rows: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: head_rows.append(output.shape[-2])
    )
    try:
        plain = score_requests(model, requests, share_prefixes=False)
        plain_rows = sum(head_rows)
        head_rows.clear()
        shared = score_requests(model, requests)
    finally:
        handle.remove()
    # Plain: one row per continuation token. Shared (its check scores 16 sequences both ways
    # first): the targets after a shared context share no position, so the last pass has as many.
    assert plain_rows == sum(len(x) for _, x in requests)
    assert head_rows[-1] <= plain_rows
    assert shared == pytest.approx(plain, abs=1e-4, rel=0)
    # Without the hook (a model whose head is not a module) the full logits are used instead.
    hook = _ScoredPositionsOnly(model)
    hook.remove()
    model.get_output_embeddings = lambda: None  # type: ignore[method-assign]
    assert score_requests(model, requests) == pytest.approx(plain, abs=1e-4, rel=0)


def test_a_pack_node_attends_to_its_path_from_the_root_only(tokenizer) -> None:
    requests = pair_requests(tokenizer, PAIRS, prefix_token(tokenizer)) + build_requests(
        tokenizer, [(p.context, " " + t) for p in EWOK_PAIRS for t in (p.good, p.bad)], None
    )
    sequences = _sequences(requests)
    batch = _tree_batch(_packs(sequences, batch_size=64, pack_nodes=40))
    prefixes = {s.tokens[:end] for s in sequences for end in range(1, len(s.tokens))}
    assert batch.attention_mask is not None and batch.position_ids is not None
    for row in range(batch.input_ids.shape[0]):
        tokens, depths = batch.input_ids[row].tolist(), batch.position_ids[row].tolist()
        mask = batch.attention_mask[row, 0]
        for node in range(len(tokens)):
            seen = mask[node].nonzero().flatten().tolist()
            if seen == [node] and depths[node] == 0 and tokens[node] == 0:
                continue  # padding (or a root that is token 0): itself only
            assert [depths[j] for j in seen] == list(range(depths[node] + 1))
            assert tuple(tokens[j] for j in seen) in prefixes


# --- the BabyLM 2025 convention (SPEC-2025 §1) ---------------------------------------------------


def reference_2025(model: PreTrainedModel, tokenizer, sentence_text: str, completion: str) -> float:
    """SPEC-2025 §1 literally, one candidate at a time: tokenise the sentence alone with offsets and
    default special tokens, mask the completion's tokens by end offset, shift, sum."""
    encoding = tokenizer(sentence_text, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    start = len(sentence_text) - len(completion)
    mask = [end > start and (begin, end) != (0, 0) for begin, end in offsets]
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits.float().log_softmax(-1)[0]
    # inputs ids[:-1], targets ids[1:], the mask shifted the same way: token 0 is never scored.
    return sum(float(log_probs[k - 1, ids[k]]) for k in range(1, len(ids)) if mask[k])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_2025_convention_matches_its_one_at_a_time_reference(arch: str, tokenizer) -> None:
    model = tiny_model(arch, seed=3)
    pairs = PAIRS + EWOK_PAIRS
    subtask = Subtask("blimp", "toy", Path("toy.jsonl"), "0" * 64, pairs)
    result = score_task(
        "blimp", [subtask], model, tokenizer, batch_size=4, max_items=None, convention="2025"
    )
    assert result.prefix_token is None  # the 2025 pipeline adds no prefix token

    def reference(pair: Pair, text: str) -> float:
        if pair.context:  # EWoK: Context1 + " " + target, the completion " " + target
            return reference_2025(model, tokenizer, f"{pair.context} {text}", f" {text}")
        return reference_2025(model, tokenizer, text, text)  # the whole sentence

    good = [r["good"] for r in result.pairs]
    bad = [r["bad"] for r in result.pairs]
    assert good == pytest.approx([reference(p, p.good) for p in pairs], abs=1e-4, rel=0)
    assert bad == pytest.approx([reference(p, p.bad) for p in pairs], abs=1e-4, rel=0)
    tie = result.pairs[len(PAIRS) - 1]  # the identical pair: an exact tie, counted correct
    assert tie["tie"] and tie["correct"]
    # The 2025 scores differ from the 2024 ones: no prefix token, the first token unscored.
    old = score_task("blimp", [subtask], model, tokenizer, batch_size=4, max_items=None)
    assert [r["good"] for r in old.pairs] != pytest.approx(good, abs=1e-3)


def test_2025_convention_leaves_the_first_token_unscored(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    from tinyminds.evaluation.scoring import completion_requests

    plain = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = "The cat sleeps."
    ids = encode(plain, text)
    # No BOS from this tokenizer: the sentence's first token is context, never scored.
    assert completion_requests(plain, [(text, text)]) == [(ids[:1], ids[1:])]
    one_token = plain.convert_ids_to_tokens(ids[:1])[0]
    assert completion_requests(plain, [(one_token, one_token)]) == [(ids[:1], [])]  # scores 0
    # EWoK: only the target's tokens (" " + target, found by offsets) are scored.
    context, target = "The big dog sees the ball.", "The dog runs."
    (request,) = completion_requests(plain, [(f"{context} {target}", f" {target}")])
    assert request == (encode(plain, context), encode(plain, f" {target}"))
    # A tokenizer that adds BOS: BOS is token 0, so every token of the sentence is scored.
    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    raw.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    save_tokenizer(raw, tmp_path)
    with_bos = AutoTokenizer.from_pretrained(str(tmp_path))
    assert completion_requests(with_bos, [(text, text)]) == [([BOS_ID], ids)]


def test_2025_results_name_their_convention_and_are_not_mixed(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    from tinyminds.errors import UserError
    from tinyminds.evaluation.compare import compare
    from tinyminds.evaluation.zero_shot import evaluate

    model_dir = tmp_path / "model"
    tiny_model("gpt2", seed=4).save_pretrained(str(model_dir))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(model_dir))
    data = tmp_path / "blimp_fast"
    data.mkdir()
    lines = [f'{{"sentence_good": "{p.good}", "sentence_bad": "{p.bad}"}}' for p in PAIRS]
    (data / "toy.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = {}
    for convention in ("2024", "2025"):
        out = tmp_path / convention
        evaluation = evaluate(
            model_dir, ["blimp_fast"], [tmp_path], out, device="cpu", convention=convention
        )
        assert evaluation.summary["convention"] == convention
        results[convention] = evaluation.json_path
    with pytest.raises(UserError, match=r"scored with the 2024 convention .* the 2025 one"):
        compare([results["2024"], results["2025"]], tmp_path / "cmp")
    with pytest.raises(UserError, match="--convention '2023'"):
        evaluate(model_dir, ["blimp_fast"], [tmp_path], tmp_path / "x", convention="2023")


def test_temperature_sweep_scores_every_t_in_one_pass(tokenizer) -> None:
    from tinyminds.evaluation.scoring import score_requests_at, sweep_record, temperature_grid

    model = tiny_model("gpt2", seed=5)
    requests = pair_requests(tokenizer, PAIRS[:5], prefix_token(tokenizer))
    at_one, at_two = score_requests_at(model, requests, (1.0, 2.0), batch_size=3)
    assert at_one == score_requests(model, requests, batch_size=3)  # T = 1: the same sums
    for (context, continuation), score in zip(requests, at_two, strict=True):
        ids = torch.tensor([context + continuation])
        with torch.no_grad():
            log_probs = (model(ids).logits.float() / 2.0).log_softmax(-1)[0]
        start = len(context) - 1
        expected = sum(float(log_probs[start + j, t]) for j, t in enumerate(continuation))
        assert score == pytest.approx(expected, abs=1e-4)
    assert temperature_grid(1.0, 1.2, 0.05) == (1.0, 1.05, 1.1, 1.15, 1.2)
    # The pipeline's rule: the highest score, strict >, so the lowest T wins a tie.
    record = sweep_record((1.0, 1.5, 2.0), [0.6, 0.7, 0.7])
    assert (record["best_temperature"], record["best_score"]) == (1.5, 0.7)
