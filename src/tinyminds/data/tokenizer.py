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
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tinyminds.console import warn
from tinyminds.errors import UserError
from tinyminds.files import write_text_atomic

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
MASK = "[MASK]"
"""The masked-LM generator's extra token (MATE-KD): appended after the shared vocabulary."""

PORTABLE_TOKENIZER_CONFIG: dict[str, object] = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_input_names": ["input_ids", "attention_mask"],
}
"""The ``tokenizer_config.json`` fields that make a folder load the same under transformers 4.x
(the BabyLM 2025 pipeline pins 4.51.3) as under 5.x.

transformers 5 saves ``"tokenizer_class": "TokenizersBackend"``, a class 4.x does not know
(`AutoProcessor` stops with "Unrecognized processing class"); ``PreTrainedTokenizerFast`` names
the same class in both (an alias in 5.x). Without ``model_input_names`` 4.x also returns
``token_type_ids``, and ``model(**tokenizer(text))`` then adds GPT-2's token-type embedding (that
of token 0) at every position: scores change.
"""
LOAD_TIME_KEYS = ("is_local", "local_files_only")
"""Keys transformers 5 writes from the call that loaded the tokenizer, not from the tokenizer;
dropped so that a saved folder says nothing about the machine that saved it."""


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
    save_hf_tokenizer(wrapped, folder)


def save_hf_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """``tokenizer.save_pretrained(folder)``, then made loadable by transformers 4.x too."""
    tokenizer.save_pretrained(str(folder))
    make_tokenizer_portable(folder)


def tokenizer_portability_problem(folder: Path) -> str | None:
    """Why transformers 4.x would not load ``folder``'s tokenizer as 5.x does, or None."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None  # a bare tokenizer.json: nothing names a class
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # loading reports an unreadable file itself
    wrong = [
        f"{key} is {fields.get(key)!r}, not {value!r}"
        for key, value in PORTABLE_TOKENIZER_CONFIG.items()
        if fields.get(key) != value
    ]
    return "; ".join(wrong) or None


def warn_if_not_portable(folder: Path) -> None:
    """Say so when ``folder`` was saved before tinyminds made its tokenizers portable."""
    problem = tokenizer_portability_problem(folder)
    if problem:
        warn(
            f"{folder}: transformers 4.x (the BabyLM 2025 pipeline) cannot load this tokenizer as "
            f"transformers 5 does ({problem}); `tinyminds upgrade {folder}` rewrites it in place"
        )


def make_tokenizer_portable(folder: Path) -> bool:
    """Rewrite ``folder/tokenizer_config.json`` in place with `PORTABLE_TOKENIZER_CONFIG`'s
    fields (nothing else of the folder is touched); True when something changed."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no tokenizer_config.json (not a tokenizer or model folder)")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    updated = {key: value for key, value in fields.items() if key not in LOAD_TIME_KEYS}
    updated.update(PORTABLE_TOKENIZER_CONFIG)
    if updated == fields:
        return False
    write_text_atomic(path, json.dumps(updated, indent=2, sort_keys=True) + "\n")
    return True


def tokenizer_folders(root: Path) -> list[Path]:
    """Every folder at or below ``root`` holding a ``tokenizer_config.json`` (model folders, a
    prepared data's tokenizer), hidden folders (a staging ``.model.tmp``) left out."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    found = [path.parent for path in sorted(root.rglob("tokenizer_config.json"))]
    return [
        folder
        for folder in found
        if not any(part.startswith(".") for part in folder.relative_to(root).parts)
    ]


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
