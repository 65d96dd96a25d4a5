"""The model zoo: every architecture of the paper (SPEC §2) plus scaled-down variants for the CPU.

A `ModelSpec` names an architecture and its sizes; `build_model` turns it into a freshly initialised
Hugging Face model for a given vocabulary. The paper's names do not match the true sizes at a
16,000-token vocabulary (GPT-2 ties its embeddings, Llama does not), so `count_parameters` reports the
real number, computed on the meta device so that even GPT2-705M is counted instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers import (
    ElectraConfig,
    ElectraForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from tinyminds.errors import UserError

PAPER_VOCAB_SIZE = 16_000
MAX_POSITIONS = 256


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the zoo, with the paper's training hyperparameters beside it."""

    name: str
    """Name used by recipes and the CLI, e.g. ``gpt2-44m``."""
    arch: str
    """``gpt2``, ``llama`` (causal LMs) or ``electra`` (the MATE-KD generator, a masked LM)."""
    hidden: int
    layers: int
    heads: int
    intermediate: int
    """MLP width (4 x hidden for GPT-2)."""
    dropout: float = 0.0
    embedding_size: int | None = None
    """ELECTRA only: factorised embedding width."""
    note: str = ""
    """Where a size was not given by the paper, say what was chosen."""
    paper: bool = True
    """False for the scaled-down CPU variants."""

    def hf_config(self, vocab_size: int = PAPER_VOCAB_SIZE) -> PretrainedConfig:
        """The `transformers` config of this architecture for a tokenizer of ``vocab_size`` tokens.

        Special ids follow the tinyminds tokenizer: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2.
        """
        special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
        if self.arch == "gpt2":
            return GPT2Config(
                vocab_size=vocab_size,
                n_positions=MAX_POSITIONS,
                n_embd=self.hidden,
                n_layer=self.layers,
                n_head=self.heads,
                n_inner=self.intermediate,
                resid_pdrop=self.dropout,
                embd_pdrop=self.dropout,
                attn_pdrop=self.dropout,
                **special,
            )
        if self.arch == "llama":
            return LlamaConfig(
                vocab_size=vocab_size,
                max_position_embeddings=MAX_POSITIONS,
                hidden_size=self.hidden,
                num_hidden_layers=self.layers,
                num_attention_heads=self.heads,
                num_key_value_heads=self.heads,
                intermediate_size=self.intermediate,
                tie_word_embeddings=False,
                **special,
            )
        if self.arch == "electra":
            # The generator adds one [MASK] token to the shared tokenizer; its output embeddings are
            # not tied, which gives the authors' ~46.9M parameters as an MLM.
            return ElectraConfig(
                vocab_size=vocab_size,
                embedding_size=self.embedding_size or self.hidden,
                hidden_size=self.hidden,
                num_hidden_layers=self.layers,
                num_attention_heads=self.heads,
                intermediate_size=self.intermediate,
                hidden_dropout_prob=self.dropout,
                attention_probs_dropout_prob=self.dropout,
                max_position_embeddings=MAX_POSITIONS,
                tie_word_embeddings=False,
                **special,
            )
        raise ValueError(f"unknown architecture {self.arch!r}")

    @property
    def is_causal_lm(self) -> bool:
        return self.arch in ("gpt2", "llama")


_SPECS = [
    # Paper scale (SPEC §2, Table 1).
    ModelSpec("gpt2-18m", "gpt2", 320, 2, 4, 4 * 320),
    ModelSpec("gpt2-44m", "gpt2", 768, 2, 8, 4 * 768),
    ModelSpec("gpt2-97m", "gpt2", 768, 12, 12, 4 * 768),
    ModelSpec("gpt2-705m", "gpt2", 1536, 24, 16, 4 * 1536, dropout=0.1),
    ModelSpec(
        "llama-20m", "llama", 384, 2, 4, 1024, note="MLP width 1024 chosen here (not in the paper)"
    ),
    ModelSpec("llama-60m", "llama", 768, 2, 8, 2048),
    ModelSpec("llama-360m", "llama", 1024, 24, 8, 3072),
    ModelSpec("llama-58m", "llama", 512, 16, 8, 1024, note="the BabyLlama student"),
    ModelSpec(
        "electra-56m",
        "electra",
        768,
        6,
        8,
        3072,
        dropout=0.1,
        embedding_size=128,
        note="MATE-KD generator (masked LM), vocabulary + [MASK]",
    ),
    # Scaled-down variants: same architectures, small enough to train in seconds on 2 CPU cores.
    ModelSpec("gpt2-tiny", "gpt2", 128, 2, 4, 4 * 128, paper=False),
    ModelSpec("llama-tiny", "llama", 128, 2, 4, 256, paper=False),
    ModelSpec("gpt2-small", "gpt2", 256, 4, 4, 4 * 256, paper=False),
    ModelSpec("llama-small", "llama", 256, 4, 4, 512, paper=False),
    ModelSpec("electra-tiny", "electra", 128, 2, 4, 256, embedding_size=64, paper=False),
    # The large teachers of the mini scale (GPT2-705M and Llama-360M stand-ins): deeper than the
    # small ones, as the paper's are, and still trainable in minutes on 2 CPU cores.
    ModelSpec("gpt2-medium", "gpt2", 256, 6, 4, 4 * 256, paper=False),
    ModelSpec("llama-medium", "llama", 256, 6, 4, 512, paper=False),
]

MODEL_ZOO: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


RESIZABLE = ("hidden", "layers", "heads", "intermediate")
"""The sizes a model name may override: ``gpt2-small:hidden=192,layers=3`` (sweeps over width and
depth use it)."""


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name`` (case-insensitive), or a zoo entry with some sizes replaced
    (``BASE:key=value,...`` with keys from `RESIZABLE`); a clear one-line error otherwise.

    A resized GPT-2 keeps an MLP of 4 x hidden unless ``intermediate`` is given, as GPT-2 does.
    """
    base_name, _, sizes = name.partition(":")
    spec = MODEL_ZOO.get(base_name.lower())
    if spec is None:
        raise UserError(f"unknown model {base_name!r}; known models: {', '.join(MODEL_ZOO)}")
    if not sizes:
        return spec
    changes: dict[str, int] = {}
    for item in sizes.split(","):
        key, _, value = item.partition("=")
        if key not in RESIZABLE or not value.isdigit() or int(value) < 1:
            raise UserError(
                f"model {name!r}: {item!r} is not SIZE=N with SIZE one of {', '.join(RESIZABLE)} "
                "and N a positive integer"
            )
        changes[key] = int(value)
    if spec.arch == "gpt2" and "hidden" in changes and "intermediate" not in changes:
        changes["intermediate"] = 4 * changes["hidden"]
    resized = replace(spec, name=name, paper=False, **changes)
    if resized.hidden % resized.heads:
        raise UserError(
            f"model {name!r}: hidden {resized.hidden} is not a multiple of heads {resized.heads}"
        )
    return resized


def build_model(spec: ModelSpec, vocab_size: int) -> PreTrainedModel:
    """A freshly initialised model of ``spec`` for a vocabulary of ``vocab_size`` tokens."""
    config = spec.hf_config(vocab_size)
    if spec.arch == "gpt2":
        return GPT2LMHeadModel(config)
    if spec.arch == "llama":
        return LlamaForCausalLM(config)
    return ElectraForMaskedLM(config)


def count_parameters(spec: ModelSpec, vocab_size: int = PAPER_VOCAB_SIZE) -> int:
    """True number of parameters (tied weights counted once), without allocating memory."""
    with torch.device("meta"):
        model = build_model(spec, vocab_size)
    return sum(p.numel() for p in model.parameters())
