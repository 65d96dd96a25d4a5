"""Recipes: YAML files that set the fields of a config, shipped inside the package.

A recipe is named by its file stem (``gpt2-44m``) or given as a path to any YAML file. Loading
applies command-line overrides on top and validates the result strictly (`tinyminds.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tinyminds.config import from_dict, parse_overrides, read_yaml
from tinyminds.errors import UserError
from tinyminds.training.config import DistillConfig, TrainConfig

T = TypeVar("T", TrainConfig, DistillConfig)

RECIPES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    kind: str
    """``train`` (tinyminds train) or ``distill`` (tinyminds distill)."""
    path: Path
    description: str


def list_recipes() -> list[RecipeInfo]:
    """Every recipe shipped with tinyminds, by kind then name."""
    found = []
    for path in sorted(RECIPES_DIR.glob("*/*.yaml")):
        data = read_yaml(path)
        found.append(
            RecipeInfo(path.stem, path.parent.name, path, str(data.get("description", "")))
        )
    return found


def find_recipe(name_or_path: str, kind: str = "train") -> Path:
    """The YAML file of a recipe name, or the path itself when it names a file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file {path} does not exist")
        return path
    candidate = RECIPES_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = ", ".join(r.name for r in list_recipes() if r.kind == kind)
        raise UserError(f"unknown {kind} recipe {name_or_path!r}; known: {names}")
    return candidate


def _load(cls: type[T], kind: str, name_or_path: str, overrides: list[str] | None) -> T:
    path = find_recipe(name_or_path, kind)
    values: dict[str, Any] = read_yaml(path)
    from_dict(cls, values, str(path))  # the file alone must be valid: errors name the file
    extra = parse_overrides(overrides or [])
    from_dict(cls, {**values, **extra}, "the command line")
    values.update(extra)
    values.setdefault("recipe", path.stem)
    return from_dict(cls, values, str(path))


def load_train_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    """A validated `TrainConfig` from a training recipe plus ``key=value`` overrides."""
    return _load(TrainConfig, "train", name_or_path, overrides)


def load_distill_config(name_or_path: str, overrides: list[str] | None = None) -> DistillConfig:
    """A validated `DistillConfig` from a distillation recipe plus ``key=value`` overrides."""
    return _load(DistillConfig, "distill", name_or_path, overrides)
