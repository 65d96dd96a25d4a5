"""Tests for the shared byte-level BPE tokenizer in `tinyminds.data.tokenizer`.

Every test trains on a few hundred short in-memory lines with a 300-token vocabulary, which takes
milliseconds, and checks what the rest of the system relies on: the special-token ids, loading with
`transformers.AutoTokenizer`, no special token added on its own, NFKC, round trips, and a hash that
identifies the vocabulary and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tinyminds.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    encode_lines,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from tinyminds.errors import UserError

VOCAB_SIZE = 300


def sample_lines(n: int = 200, extra: str = "") -> list[str]:
    """Varied English-like lines: enough distinct pairs to fill a 300-token vocabulary."""
    return [
        f"the quick brown fox {i} jumps over the lazy dog number {i * 7}. "
        f"Hello world, said Alice to Bob {extra}on day {i % 31}!"
        for i in range(n)
    ]


def trained_folder(folder: Path, lines: list[str], vocab_size: int = VOCAB_SIZE) -> Path:
    save_tokenizer(train_tokenizer(lines, vocab_size), folder)
    return folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_folder(tmp_path_factory.mktemp("tok") / "tokenizer", sample_lines())


@pytest.fixture(scope="module")
def loaded(saved: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(saved))


def test_special_token_ids_of_the_trained_tokenizer() -> None:
    tokenizer = train_tokenizer(sample_lines(), VOCAB_SIZE)
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 1, 2)
    assert tokenizer.token_to_id("<pad>") == 0
    assert tokenizer.token_to_id("<s>") == 1
    assert tokenizer.token_to_id("</s>") == 2


def test_saved_folder_loads_with_auto_tokenizer(saved: Path, loaded: PreTrainedTokenizerBase):
    assert (saved / "tokenizer.json").is_file()
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<s>", "</s>")
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<s>", "</s>"]
    # The package's own loader gives the same tokenizer.
    assert load_tokenizer(saved).get_vocab() == loaded.get_vocab()


def test_load_tokenizer_of_a_folder_without_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match=r"tokenizer\.json"):
        tokenizer_hash(tmp_path)


@pytest.mark.parametrize("text", [" hello", "hello", " the quick brown fox."])
def test_encoding_adds_no_special_token(loaded: PreTrainedTokenizerBase, text: str) -> None:
    default = loaded(text)["input_ids"]
    explicit = loaded(text, add_special_tokens=False)["input_ids"]
    assert default == explicit
    assert default
    assert not {PAD_ID, BOS_ID, EOS_ID} & set(default)
    assert loaded.encode(text) == explicit


@pytest.mark.parametrize(
    ("compatible", "canonical"),
    [("ﬁne", "fine"), ("Ａlice", "Alice"), ("①", "1"), ("ｈｅｌｌｏ ｗｏｒｌｄ", "hello world")],
)
def test_nfkc_normalisation(loaded: PreTrainedTokenizerBase, compatible: str, canonical: str):
    assert loaded.encode(compatible) == loaded.encode(canonical)
    assert loaded.decode(loaded.encode(compatible)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World! 123 ~`",
        " leading space and  two spaces",
        "line one\nline two\n",
        "unseen words: xylophone QUIZ zebra {}[]<>|\\^_@#$%&*",
        "\ttab",
    ],
)
def test_decode_encode_round_trips_ascii(loaded: PreTrainedTokenizerBase, text: str) -> None:
    assert loaded.decode(loaded.encode(text)) == text


def test_round_trip_of_non_ascii_nfkc_stable_text(loaded: PreTrainedTokenizerBase) -> None:
    # Byte-level BPE covers every byte: text already in NFKC form survives unchanged.
    text = "café naïve — “quoted” 東京 😀"
    assert loaded.decode(loaded.encode(text)) == text


def test_encode_lines_appends_newline_and_batches(loaded: PreTrainedTokenizerBase) -> None:
    backend = loaded.backend_tokenizer
    lines = ["first line", "second, line", "x"]
    expected = [loaded.encode(line + "\n") for line in lines]
    assert list(encode_lines(backend, lines)) == expected
    assert list(encode_lines(backend, lines, batch=1)) == expected


def test_hash_is_stable_across_load_and_resave(
    saved: Path, loaded: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    loaded.save_pretrained(str(tmp_path / "resaved"))
    assert tokenizer_hash(tmp_path / "resaved") == tokenizer_hash(saved)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "resaved"))
    reloaded.save_pretrained(str(tmp_path / "again"))
    assert tokenizer_hash(tmp_path / "again") == tokenizer_hash(saved)
    assert len(tokenizer_hash(saved)) == 64


def test_hash_is_deterministic_for_the_same_training_text(saved: Path, tmp_path: Path) -> None:
    again = trained_folder(tmp_path / "again", sample_lines())
    assert tokenizer_hash(again) == tokenizer_hash(saved)


def test_hash_changes_with_the_vocabulary(saved: Path, tmp_path: Path) -> None:
    smaller = trained_folder(tmp_path / "smaller", sample_lines(), vocab_size=280)
    other_text = trained_folder(
        tmp_path / "other", sample_lines(extra="zyzzyva quixotic ") + ["zyzzyva"] * 50
    )
    hashes = {tokenizer_hash(saved), tokenizer_hash(smaller), tokenizer_hash(other_text)}
    assert len(hashes) == 3


def test_vocabulary_size(saved: Path, loaded: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    # Rich enough text fills the requested size exactly ...
    assert len(loaded) == VOCAB_SIZE
    # ... and poor text stops short of it, but never goes over.
    poor = AutoTokenizer.from_pretrained(
        str(trained_folder(tmp_path / "poor", ["ab ab ab", "ab"], vocab_size=1000))
    )
    assert 256 + 3 <= len(poor) < 1000
    assert (poor.pad_token_id, poor.bos_token_id, poor.eos_token_id) == (0, 1, 2)
