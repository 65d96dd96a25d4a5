"""Loading teacher models for distillation, and refusing teachers that cannot teach this student.

A teacher must be a causal LM folder whose tokenizer is the prepared data's (same hash) and whose
vocabulary matches the student's: distillation compares distributions token id by token id, so a
teacher with another tokenizer would teach nonsense without any error.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from tinyminds.data.chunks import PreparedData
from tinyminds.data.tokenizer import tokenizer_hash, warn_if_not_portable
from tinyminds.errors import UserError


def load_teacher(folder: Path, data: PreparedData, student: str) -> nn.Module:
    """The causal LM in ``folder``, checked against the data's tokenizer and vocabulary."""
    if not folder.exists():
        raise UserError(f"teacher folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise UserError(f"teacher {folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise UserError(f"teacher {folder}: unreadable config.json ({error})") from None
    if not (folder / "tokenizer.json").is_file():
        raise UserError(
            f"teacher {folder} has no tokenizer (tokenizer.json) to check against the data's"
        )
    teacher_hash = tokenizer_hash(folder)
    if teacher_hash != data.tokenizer_hash:
        raise UserError(
            f"teacher {folder} and student {student} use different tokenizers: the teacher's "
            f"(hash {teacher_hash[:12]}) is not the one of the data {data.folder} "
            f"(hash {data.tokenizer_hash[:12]})"
        )
    vocab = getattr(config, "vocab_size", None)
    if vocab != data.vocab_size:
        raise UserError(
            f"teacher {folder} has a vocabulary of {vocab} tokens but student {student} has "
            f"{data.vocab_size} (the data's tokenizer)"
        )
    # AutoModelForCausalLM would happily turn a masked LM (ELECTRA, BERT) into a decoder with a
    # warning; the architecture the folder was saved as says what it really is.
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UserError(
            f"teacher {folder} is not a causal language model (saved as {', '.join(architectures)})"
        )
    warn_if_not_portable(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        kind = getattr(config, "model_type", "unknown")
        raise UserError(
            f"teacher {folder} is not a causal language model (model type {kind}): {error}"
        ) from None
    return model.eval().requires_grad_(False)


def load_teachers(folders: list[str], data: PreparedData, student: str) -> list[nn.Module]:
    """Every teacher of a distillation run, or a one-line error about the first bad one."""
    if not folders:
        raise UserError("no teachers: set teachers=[FOLDER, FOLDER] (trained model folders)")
    return [load_teacher(Path(folder), data, student) for folder in folders]
