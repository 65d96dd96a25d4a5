"""The model zoo: true parameter counts (SPEC §2) and that every entry builds and runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tinyminds.errors import UserError
from tinyminds.models.zoo import MODEL_ZOO, build_model, count_parameters, get_spec

# SPEC §2: counted at the paper's vocabulary of 16,000 tokens.
PUBLISHED = {
    "gpt2-44m": 26_661_888,
    "llama-60m": 38_735_616,
    "gpt2-705m": 704_928_768,
    "llama-360m": 359_973_888,
    "llama-58m": 58_343_936,
}


@pytest.mark.parametrize(("name", "parameters"), PUBLISHED.items())
def test_parameter_counts_match_spec(name: str, parameters: int) -> None:
    assert count_parameters(get_spec(name)) == parameters


def test_electra_generator_is_about_46_9m_as_an_mlm() -> None:
    # The authors' generator: embedding 128, untied output layer, vocabulary + [MASK].
    assert count_parameters(get_spec("electra-56m"), 16_001) == pytest.approx(46.9e6, rel=0.002)


def test_every_paper_model_of_table_1_is_in_the_zoo() -> None:
    paper = {s.name for s in MODEL_ZOO.values() if s.paper}
    assert paper == {
        "gpt2-18m", "gpt2-44m", "gpt2-97m", "gpt2-705m",
        "llama-20m", "llama-60m", "llama-360m", "llama-58m", "electra-56m",
    }  # fmt: skip
    assert get_spec("gpt2-705m").dropout == 0.1


@pytest.mark.parametrize("name", [s.name for s in MODEL_ZOO.values() if not s.paper])
def test_scaled_down_models_build_and_run(name: str) -> None:
    spec = get_spec(name)
    model = build_model(spec, 500)
    ids = torch.randint(0, 500, (2, 16))
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 16, 500)
    assert count_parameters(spec, 500) == sum(p.numel() for p in model.parameters())


def test_special_ids_follow_the_tokenizer() -> None:
    config = get_spec("llama-58m").hf_config()
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
    assert config.max_position_embeddings == 256 and not config.tie_word_embeddings


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown model 'gpt5'.*gpt2-44m"):
        get_spec("gpt5")


def test_models_command_lists_true_counts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tinyminds", "models"], capture_output=True, text=True, check=True
    )
    assert "704,928,768" in result.stdout and "58,343,936" in result.stdout
    assert "MLP width 1024 chosen here" in result.stdout
