"""The byte-level BPE tokenizer shared by every teacher and student (SPEC §1).

Trained on the cleaned train split only, NFKC-normalised, with ``<pad>`` = 0, ``<s>`` = 1 and
``</s>`` = 2, and saved as a Hugging Face tokenizer folder so that ``AutoTokenizer.from_pretrained``
loads it beside the model. Its identity is the SHA-256 of its canonical ``tokenizer.json``: caches of
tokenized data and (later) teacher logits are keyed by that hash, never by a name.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tinyminds.errors import UserError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
MASK = "[MASK]"
"""The masked-LM generator's extra token (MATE-KD): appended after the shared vocabulary."""


def train_tokenizer(
    lines: Iterable[str], vocab_size: int = 16_000, min_frequency: int = 2
) -> Tokenizer:
    """Train a byte-level BPE on ``lines`` of cleaned training text."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    for token, expected in zip(SPECIAL_TOKENS, (PAD_ID, BOS_ID, EOS_ID), strict=True):
        assert tokenizer.token_to_id(token) == expected, "special tokens must come first"
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    """Save ``tokenizer`` as a folder that ``AutoTokenizer.from_pretrained`` loads."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=None,
        model_max_length=256,
    )
    wrapped.save_pretrained(str(folder))


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in ``folder`` (a prepared data folder's or a model folder's)."""
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder}: no tokenizer.json (not a tokenizer or model folder)")
    return AutoTokenizer.from_pretrained(str(folder))


def with_mask_token(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """``tokenizer`` plus a ``[MASK]`` special token with the next free id (the masked LM's).

    Every existing id keeps its meaning (the token is appended, nothing is re-trained), so the
    generator, the teachers and the student read the same ids; only the generator knows id
    ``len(tokenizer)``. Refuses a vocabulary where ``[MASK]`` already exists as a plain token.
    """
    if MASK in tokenizer.get_vocab():
        raise UserError(f"the tokenizer already has a token {MASK!r}; it cannot gain a new one")
    size = len(tokenizer)
    tokenizer.add_special_tokens({"mask_token": MASK})
    assert tokenizer.mask_token_id == size, "[MASK] must come after every other id"
    return tokenizer


def load_mlm_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in ``folder`` plus ``[MASK]`` (what a masked-LM model folder holds)."""
    return with_mask_token(load_tokenizer(folder))


def mlm_tokenizer_hash(folder: Path) -> str:
    """`tokenizer_hash` of the tokenizer in ``folder`` once it has gained ``[MASK]``."""
    with tempfile.TemporaryDirectory() as temporary:
        load_mlm_tokenizer(folder).save_pretrained(temporary)
        return tokenizer_hash(Path(temporary))


def tokenizer_hash(folder: Path) -> str:
    """SHA-256 of the tokenizer's vocabulary, merges, normaliser and specials (canonical JSON).

    Hashing the parsed JSON with sorted keys makes the hash independent of formatting, so the same
    tokenizer re-saved by another `transformers` version keeps its identity.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{folder}: no tokenizer.json (not a tokenizer or model folder)")
    data = json.loads(path.read_text(encoding="utf-8"))
    relevant = {
        key: data.get(key)
        for key in ("model", "normalizer", "pre_tokenizer", "post_processor", "added_tokens")
    }
    canonical = json.dumps(relevant, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def encode_lines(tokenizer: Tokenizer, lines: list[str], batch: int = 4096) -> Iterator[list[int]]:
    """Token ids of each line followed by its newline, in batches (the Rust side runs them in parallel).

    Lines are the unit of tokenization: the byte-level pre-tokeniser splits at a newline anyway, so
    this matches encoding the whole text except where a run of spaces straddles a line end, and it
    lets the Rust side encode many lines at once.
    """
    for start in range(0, len(lines), batch):
        chunk = [line + "\n" for line in lines[start : start + batch]]
        for encoding in tokenizer.encode_batch(chunk, add_special_tokens=False):
            yield encoding.ids
