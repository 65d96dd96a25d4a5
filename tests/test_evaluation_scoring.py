"""The batched scorer against a brute-force reference, on tiny random GPT-2 and Llama models.

The reference scores one sequence at a time, without padding, with a plain
``model(ids).logits.log_softmax(-1)``, and tokenizes on its own (``[BOS] + " sentence"`` for BLiMP,
context and ``" " + target`` separately for EWoK), so both the batching and the request building
are checked. The models' weights are drawn wide (std 0.2) so that scores differ by whole nats and a
decision cannot hinge on float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from tinyminds.data.tokenizer import BOS, BOS_ID, save_tokenizer, train_tokenizer
from tinyminds.evaluation.results import decide
from tinyminds.evaluation.scoring import (
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


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; one avoids contention on a loaded CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
@pytest.mark.parametrize("batch_size", [64, 3])
def test_batched_scores_match_the_one_at_a_time_reference(
    arch: str, batch_size: int, tokenizer
) -> None:
    model = tiny_model(arch)
    prefix = prefix_token(tokenizer)
    assert (prefix.kind, prefix.id) == ("BOS", BOS_ID)
    pairs = PAIRS + EWOK_PAIRS
    scores = score_requests(model, pair_requests(tokenizer, pairs, prefix), batch_size)
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
