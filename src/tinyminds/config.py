"""Typed, documented configs loaded from YAML recipes, with command-line overrides.

Every config is a plain dataclass whose fields carry a docstring right under them (the litgpt way);
`field_docs` reads those docstrings back so that `--help` and `tinyminds recipes --show` can print
them. Loading is strict: an unknown key, or a value of the wrong type, is a `UserError` that names
the key and the file it came from, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tinyminds.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config field, declared in its type:
    ``batch_size: Annotated[int, Range(1)] = 32``. Checked when a config is built (`check_ranges`),
    before anything is written; a value outside is one line naming the key and this range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True: ``low`` itself is not allowed (``> low``)."""
    high_open: bool = False
    """True: ``high`` itself is not allowed (``< high``)."""

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and value != value:  # NaN is in no range
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high)
        )

    def __str__(self) -> str:
        def show(bound: float | None) -> str:
            assert bound is not None
            return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

        if self.high is None:
            return f"{'>' if self.low_open else '>='} {show(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {show(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{show(self.low)}, {show(self.high)}{right}"


@functools.cache
def declared_ranges(cls: type) -> dict[str, tuple[Range, bool]]:
    """Field -> (its declared `Range`, whether the field is a list of such numbers)."""
    found = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        is_list = typing.get_origin(hint) is list
        if is_list:
            (hint,) = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Annotated:
            declared = [m for m in hint.__metadata__ if isinstance(m, Range)]
            if declared:
                found[name] = (declared[0], is_list)
    return found


def numeric_fields(cls: type) -> list[str]:
    """The int and float fields of dataclass ``cls`` (lists of them included)."""
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is list:
            (hint,) = typing.get_args(hint)
        options = (
            typing.get_args(hint)
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            else (hint,)
        )
        if any(option in (int, float) for option in options):
            names.append(name)
    return names


def check_ranges(config: Any) -> None:
    """Refuse a field of dataclass ``config`` whose value lies outside its declared `Range`."""
    for name, (allowed, is_list) in declared_ranges(type(config)).items():
        value = getattr(config, name)
        for item in value if is_list else [value]:
            if item is not None and not allowed.contains(item):
                kind = "an integer" if isinstance(item, int) else "a number"
                raise UserError(f"key '{name}' is {item!r}; allowed: {kind} {allowed}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (empty when a field has none)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Convert ``value`` to ``annotation`` (int, float, str, bool, X | None, Literal, list[X]) or say why not."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except UserError:
                continue
        raise UserError(f"{source}: key '{key}' has value {value!r}, expected {annotation}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):  # "a,b" on the command line
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: key '{key}' has value {value!r}, expected a list")
        return [_coerce(item, item_type, key, source) for item in value]
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise UserError(f"{source}: key '{key}' is {value!r}, expected one of {choices}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "7e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise TypeError(f"unsupported config type {annotation!r} for '{key}'")
    name = getattr(annotation, "__name__", str(annotation))
    raise UserError(f"{source}: key '{key}' has value {value!r}, expected {name}")


def from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and mistyped values.

    ``source`` names where the values came from (a file, or "the command line") for the message.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown key '{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key, source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{source}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except UserError as error:  # a value outside its declared range (`check_ranges`)
        raise UserError(f"{source}: {error}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with a one-line error for a missing or malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "epochs=2"]`` -> ``{"lr": 0.001, "epochs": 2}`` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} is not of the form key=value")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            overrides[key.strip()] = raw
    return overrides


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (for the run folder's ``config.yaml``)."""
    return dataclasses.asdict(config)
