"""Configs and recipes: strict, typed loading; overrides; documented fields; the CLI's help and errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tinyminds.config import field_docs, from_dict, parse_overrides
from tinyminds.errors import UserError
from tinyminds.models.zoo import MODEL_ZOO
from tinyminds.recipes import list_recipes, load_distill_config, load_train_config
from tinyminds.training.config import TrainConfig


def test_every_field_is_documented() -> None:
    docs = field_docs(TrainConfig)
    missing = [f.name for f in dataclasses.fields(TrainConfig) if not docs.get(f.name)]
    assert missing == []


def test_every_recipe_loads_and_names_a_zoo_model() -> None:
    recipes = list_recipes()
    names = {r.name for r in recipes}
    for paper_model in ("gpt2-18m", "gpt2-44m", "gpt2-97m", "gpt2-705m", "llama-20m", "llama-60m",
                        "llama-360m", "llama-58m"):  # fmt: skip
        assert paper_model in names
    for recipe in recipes:
        load = load_distill_config if recipe.kind == "distill" else load_train_config
        config = load(recipe.name)
        assert config.model in MODEL_ZOO
        assert config.recipe == recipe.name and recipe.description
    assert {r.name for r in recipes if r.kind == "distill"} >= {"distilledgpt-44m", "babyllama-58m"}


def test_paper_hyperparameters_of_table_1() -> None:
    gpt2 = load_train_config("gpt2-705m")
    assert (gpt2.lr, gpt2.batch_size, gpt2.epochs, gpt2.grad_accum, gpt2.warmup_steps) == (
        2.5e-4, 128, 4, 16, 300,
    )  # fmt: skip
    student = load_train_config("llama-58m")
    assert (student.lr, student.batch_size, student.epochs, student.warmup_steps) == (
        2.5e-4,
        32,
        6,
        200,
    )
    assert student.weight_decay == 0.1


def test_overrides_are_typed() -> None:
    config = load_train_config(
        "gpt2-44m", ["lr=1e-3", "epochs=2", "compile=true", "data=/x", "init_from=null"]
    )
    assert (config.lr, config.epochs, config.compile, config.data, config.init_from) == (
        1e-3,
        2,
        True,
        "/x",
        None,
    )
    assert parse_overrides(["a=1", "b=x=y", "c="]) == {"a": 1, "b": "x=y", "c": ""}


def test_unknown_key_in_a_file_names_key_and_file(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: gpt2-tiny\nlearning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"mine\.yaml: unknown key 'learning_rate'"):
        load_train_config(str(recipe))


def test_mistyped_value_names_key_and_file(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: gpt2-tiny\nepochs: two\n")
    with pytest.raises(UserError, match=r"mine\.yaml: key 'epochs' has value 'two', expected int"):
        load_train_config(str(recipe))


def test_override_errors_name_the_command_line() -> None:
    with pytest.raises(UserError, match="the command line: unknown key 'epoch'"):
        load_train_config("gpt2-tiny", ["epoch=3"])
    with pytest.raises(UserError, match="precision' is 'fp8', expected one of"):
        load_train_config("gpt2-tiny", ["precision=fp8"])
    with pytest.raises(UserError, match="not of the form key=value"):
        load_train_config("gpt2-tiny", ["epochs"])


def test_missing_required_key_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing required key"):
        from_dict(TrainConfig, {}, "x.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [gpt2\n")
    with pytest.raises(UserError, match=r"broken\.yaml: not valid YAML at line"):
        load_train_config(str(broken))
    with pytest.raises(UserError, match="unknown train recipe 'nope'"):
        load_train_config("nope")


COMMANDS = ["prepare", "models", "recipes", "train", "distill", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tinyminds", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "example:" in result.stdout and f"tinyminds {command}" in result.stdout


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model: gpt2-tiny\nbatchsize: 8\n")
    result = subprocess.run(
        [sys.executable, "-m", "tinyminds", "train", str(recipe)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tinyminds train: error: {recipe}: unknown key 'batchsize' (did you mean batch_size?)"
    ]


def test_recipes_command_lists_and_shows() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "tinyminds", "recipes"], capture_output=True, text=True, check=True
    ).stdout
    assert "gpt2-705m" in listing and "704,928,768" in listing
    shown = subprocess.run(
        [sys.executable, "-m", "tinyminds", "recipes", "--show", "llama-58m"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "warmup_steps" in shown and "linear warm-up" in shown


def test_distill_recipes_and_list_overrides() -> None:
    config = load_distill_config(
        "distilledgpt-44m", ["teachers=[a/model,b/model]", "teacher_weights=0.3,0.7"]
    )
    assert config.teachers == ["a/model", "b/model"] and config.teacher_weights == [0.3, 0.7]
    paper = load_distill_config("babyllama-58m")
    assert (paper.model, paper.alpha, paper.temperature, paper.kl_reduction) == (
        "llama-58m",
        0.5,
        2.0,
        "sequence",
    )
    assert (paper.lr, paper.batch_size, paper.epochs, paper.warmup_steps, paper.weight_decay) == (
        2.5e-4, 32, 6, 200, 0.1,
    )  # fmt: skip
    with pytest.raises(UserError, match="kl_reduction' is 'mean', expected one of"):
        load_distill_config("distill-tiny", ["kl_reduction=mean"])
    with pytest.raises(UserError, match="teacher_weights' has value 'x'"):
        load_distill_config("distill-tiny", ["teacher_weights=[x]"])
