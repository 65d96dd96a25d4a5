"""Model folders that load the same under transformers 4.x (the BabyLM 2025 pipeline) as under 5.x.

The cross-version load itself needs a second environment with transformers 4.51.3 and lives in
`benchmarks/check_portability.py`; here: the fields every folder tinyminds writes carries, the
tokenizer's returned keys, the warning on an old folder and `tinyminds upgrade` rewriting it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from tinyminds.cli import main
from tinyminds.data.chunks import load_prepared
from tinyminds.data.tokenizer import (
    PORTABLE_TOKENIZER_CONFIG,
    load_tokenizer,
    tokenizer_folders,
    tokenizer_portability_problem,
    warn_if_not_portable,
)
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training.engine import export_model

TEXTS = ["The cat sat on the mat.", "Where are the kings of Rome?"]


def tokenizer_config(folder: Path) -> dict:
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built tiny GPT-2 exported as tinyminds exports every model."""
    data = load_prepared(prepared_data)
    torch.manual_seed(0)
    model = build_model(get_spec("gpt2-tiny"), data.vocab_size)
    target = tmp_path_factory.mktemp("export") / "model"
    export_model(model, data, target, {"recipe": "test"})
    return target


def old_style_copy(exported: Path, target: Path) -> Path:
    """``exported`` as tinyminds saved it before: transformers 5's own tokenizer_config.json."""
    AutoModelForCausalLM.from_pretrained(str(exported)).save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(exported)).save_pretrained(str(target))
    return target


def test_exported_folder_names_a_class_both_versions_know(exported: Path) -> None:
    fields = tokenizer_config(exported)
    assert fields["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert fields["model_input_names"] == ["input_ids", "attention_mask"]
    # Load-time keys of the saving machine are not part of the tokenizer.
    assert "local_files_only" not in fields and "is_local" not in fields
    assert tokenizer_portability_problem(exported) is None


def test_prepared_data_tokenizer_is_portable(prepared_data: Path) -> None:
    folder = load_prepared(prepared_data).tokenizer_dir
    assert tokenizer_portability_problem(folder) is None
    assert tokenizer_config(folder)["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_tokenizer_returns_only_ids_and_mask_and_processor_loads(exported: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(exported))
    for text in TEXTS:
        assert sorted(tokenizer(text).keys()) == ["attention_mask", "input_ids"]
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert sorted(batch.keys()) == ["attention_mask", "input_ids"]
    processor = AutoProcessor.from_pretrained(str(exported))  # what the 2025 pipeline calls
    assert processor(TEXTS[0])["input_ids"] == tokenizer(TEXTS[0])["input_ids"]
    # The reading task calls model(**tokenizer(text)): that must be the plain forward pass.
    model = AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    encoded = tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        direct = model(input_ids=encoded["input_ids"]).logits
        unpacked = model(**encoded).logits
    torch.testing.assert_close(unpacked, direct, rtol=0, atol=0)


def test_old_folder_warns_and_upgrade_rewrites_it_in_place(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = old_style_copy(exported, tmp_path / "runs" / "gpt2" / "model")
    assert tokenizer_config(old)["tokenizer_class"] == "TokenizersBackend"
    problem = tokenizer_portability_problem(old)
    assert problem is not None and "TokenizersBackend" in problem
    ids_before = load_tokenizer(old)(TEXTS[0])["input_ids"]
    weights_before = (old / "model.safetensors").read_bytes()
    capsys.readouterr()
    warn_if_not_portable(old)
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and f"tinyminds upgrade {old}" in warning

    assert main(["upgrade", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out == f"upgraded: {old}\n"
    fields = tokenizer_config(old)
    assert {key: fields[key] for key in PORTABLE_TOKENIZER_CONFIG} == PORTABLE_TOKENIZER_CONFIG
    assert fields["pad_token"] == "<pad>" and fields["model_max_length"] == 256  # the rest kept
    assert (old / "model.safetensors").read_bytes() == weights_before  # weights untouched
    assert load_tokenizer(old)(TEXTS[0])["input_ids"] == ids_before
    warn_if_not_portable(old)
    assert capsys.readouterr().err == ""

    assert main(["upgrade", str(old)]) == 0  # a second run changes nothing
    assert capsys.readouterr().out == f"already portable: {old}\n"


def test_upgrade_refuses_a_folder_without_tokenizer_before_writing(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = old_style_copy(exported, tmp_path / "old")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["upgrade", str(old), str(empty)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(empty) in error and "tokenizer_config.json" in error
    assert tokenizer_config(old)["tokenizer_class"] == "TokenizersBackend"  # nothing written
    assert main(["upgrade", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_tokenizer_folders_skip_staging_folders(exported: Path, tmp_path: Path) -> None:
    old_style_copy(exported, tmp_path / "a" / "model")
    old_style_copy(exported, tmp_path / "a" / ".model.tmp")
    assert tokenizer_folders(tmp_path) == [tmp_path / "a" / "model"]
