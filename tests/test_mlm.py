"""The ELECTRA generator's pretraining: [MASK] added to the tokenizer, masking, a real MLM run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tinyminds.data.chunks import load_prepared
from tinyminds.data.tokenizer import (
    MASK,
    load_mlm_tokenizer,
    load_tokenizer,
    mlm_tokenizer_hash,
    tokenizer_hash,
    with_mask_token,
)
from tinyminds.errors import UserError
from tinyminds.recipes import load_train_config
from tinyminds.training.config import DistillConfig
from tinyminds.training.engine import train
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.base import Batch
from tinyminds.training.objectives.distillation import distill
from tinyminds.training.objectives.mlm import MLMObjective, mask_tokens

TEXT = "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name."


def test_mask_token_is_appended_and_every_other_id_is_unchanged(prepared_data: Path) -> None:
    folder = load_prepared(prepared_data).tokenizer_dir
    plain, extended = load_tokenizer(folder), load_mlm_tokenizer(folder)
    old_vocab, new_vocab = plain.get_vocab(), extended.get_vocab()
    assert len(old_vocab) == 1000 and len(new_vocab) == 1001
    for token, index in old_vocab.items():  # every existing id maps the same, both ways
        assert new_vocab[token] == index
        assert extended.convert_ids_to_tokens(index) == plain.convert_ids_to_tokens(index)
    assert new_vocab[MASK] == extended.mask_token_id == 1000
    assert extended(TEXT)["input_ids"] == plain(TEXT)["input_ids"]
    assert extended(f"{TEXT} {MASK}")["input_ids"][-1] == 1000
    assert (plain.pad_token_id, plain.bos_token_id, plain.eos_token_id) == (0, 1, 2)
    assert (extended.pad_token_id, extended.bos_token_id, extended.eos_token_id) == (0, 1, 2)
    assert mlm_tokenizer_hash(folder) != tokenizer_hash(folder)
    with pytest.raises(UserError, match="already has a token"):
        with_mask_token(extended)  # a second [MASK] is refused


def test_masking_rates_and_labels() -> None:
    ids = torch.randint(3, 500, (64, 128))
    generator = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(
        ids, mask_id=500, vocab_size=500, mask_prob=0.15, generator=generator
    )
    selected = labels != -100
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])  # unselected positions untouched
    as_mask = (masked == 500) & selected
    assert as_mask.sum().item() / selected.sum().item() == pytest.approx(0.8, abs=0.03)
    kept = (masked == ids) & selected  # 10% unchanged plus random draws that hit the same id
    assert kept.sum().item() / selected.sum().item() == pytest.approx(0.1, abs=0.03)
    assert int(masked.max()) <= 500
    # 30% (MATE-KD's perturbation rate) and a row too short to be sure to hit a position
    _, labels = mask_tokens(ids, 500, 500, 0.3, torch.Generator().manual_seed(1))
    assert (labels != -100).float().mean().item() == pytest.approx(0.3, abs=0.01)
    _, labels = mask_tokens(ids[:, :2], 500, 500, 0.01, torch.Generator().manual_seed(1))
    assert bool((labels != -100).any(dim=1).all())


def test_dev_masks_depend_on_the_chunk_not_the_batch() -> None:
    objective = MLMObjective(mask_id=500, vocab_size=500)
    ids = torch.randint(3, 500, (6, 32))
    whole = objective.corrupt(Batch(ids, torch.arange(10, 16), "dev"))
    part = objective.corrupt(Batch(ids[3:], torch.arange(13, 16), "dev"))
    assert torch.equal(whole[0][3:], part[0]) and torch.equal(whole[1][3:], part[1])
    train_a = objective.corrupt(Batch(ids, torch.arange(6), "train"))
    train_b = objective.corrupt(Batch(ids, torch.arange(6), "train"))
    assert not torch.equal(train_a[1], train_b[1])  # training masks are drawn afresh


def test_electra_tiny_trains_as_a_masked_lm(prepared_data: Path, tmp_path: Path) -> None:
    config = load_train_config(
        "electra-tiny",
        [
            f"data={prepared_data}",
            f"out={tmp_path / 'electra'}",
            "epochs=2",
            "max_steps=16",
            "batch_size=8",
            "eval_chunks=32",
            "checkpoint_every=0",
            "log_every=1",
        ],
    )
    result = train(config)  # max_steps ends the run inside the first epoch: one validation
    records = read_metrics(tmp_path / "electra")
    validation = [r for r in records if r["kind"] == "val"]
    assert validation and all("accuracy" in r for r in validation)
    steps = [r for r in records if r["kind"] == "train"]
    assert steps[-1]["ce"] < steps[0]["ce"] and "accuracy" in steps[0]
    assert validation[-1]["accuracy"] > 0.02  # 20x chance (1/1000) after 16 small steps
    # The exported folder is a masked LM with the data's tokenizer plus [MASK].
    model = AutoModelForMaskedLM.from_pretrained(result.model_dir)
    assert model.config.vocab_size == 1001
    assert AutoTokenizer.from_pretrained(result.model_dir).mask_token_id == 1000
    assert tokenizer_hash(result.model_dir) == mlm_tokenizer_hash(
        load_prepared(prepared_data).tokenizer_dir
    )
    # and it can continue from there
    again = train(
        load_train_config(
            "electra-tiny",
            [
                f"data={prepared_data}",
                f"out={tmp_path / 'again'}",
                f"init_from={result.model_dir}",
                "max_steps=1",
                "eval_chunks=8",
            ],
        )
    )
    assert again.steps == 1
    with pytest.raises(UserError, match="is a masked LM; distillation trains causal LMs"):
        distill(DistillConfig(model="electra-tiny", data=str(prepared_data), teachers=["x"]))
