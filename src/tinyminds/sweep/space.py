"""A sweep's search space: a YAML file naming a base recipe and the keys to vary.

```yaml
recipe: distill-mini          # a train or distill recipe (name or path): every trial starts there
set:                          # fixed keys of every trial (paths, say)
  data: runs/mini/data
  teachers: [runs/mini/gpt2/model, runs/mini/llama/model]
sampler: grid                 # grid (every combination once) or tpe (Optuna's TPE, `trials` of them)
trials: 20                    # tpe only
seed: 0                       # the sampler's seed (tpe)
metrics: [dev_ce]             # what is optimised; several: a Pareto front
eval_data: evaluation_data/   # only for evaluation metrics (blimp_fast, ...)
params:
  alpha: [0.25, 0.5, 0.75]    # a list: grid values (tpe: categorical choices)
  temperature: {choices: [1, 2, 4]}
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # a range (tpe only)
  model.hidden: [128, 192, 256]                  # the student's width: model=BASE:hidden=N
```

Every key of ``params`` and ``set`` is a field of the recipe's config, or ``model.hidden``,
``model.layers``, ``model.heads``, ``model.intermediate`` (the model's sizes, `models.zoo.RESIZABLE`).
The file is checked whole before anything is written: unknown keys, a range under the grid
sampler, and every trial's config (each grid point; a range's two ends) built and range-checked.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyminds.config import from_dict, read_yaml
from tinyminds.errors import UserError
from tinyminds.models.zoo import RESIZABLE, get_spec
from tinyminds.recipes import RECIPES_DIR
from tinyminds.training.config import DistillConfig, TrainConfig

MODEL_PREFIX = "model."
METRICS = {
    "dev_ce": "minimize",
    "parameters": "minimize",
    "tokens_per_second": "maximize",
}
"""Run metrics (from the trial's summary) and their direction; any other metric name is an
evaluation task's score (`tinyminds.evaluation.tasks.TASKS`: higher is better)."""
TOP_KEYS = {"recipe", "set", "sampler", "trials", "seed", "metrics", "eval_data", "params"}


@dataclass(frozen=True)
class Param:
    """One varied key: a list of values (grid, or categorical) or a numeric range."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    recipe: str
    kind: str
    """``train`` or ``distill``: the base recipe's kind."""
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    sampler: str
    trials: int
    seed: int
    metrics: tuple[str, ...]
    eval_data: Path | None
    recipe_values: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [METRICS.get(metric, "maximize") for metric in self.metrics]

    @property
    def evaluation_tasks(self) -> list[str]:
        return [metric for metric in self.metrics if metric not in METRICS]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed values (the grid sampler's trials), in file order."""
        keys = [p.key for p in self.params]
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(p.values for p in self.params))
        ]

    def config(self, values: dict[str, Any], out: Path) -> TrainConfig | DistillConfig:
        """The trial's validated config: the recipe, the fixed keys, ``values``, its folder."""
        merged = {**self.recipe_values, **self.fixed}
        sizes = {}
        for key, value in values.items():
            if key.startswith(MODEL_PREFIX):
                sizes[key[len(MODEL_PREFIX) :]] = value
            else:
                merged[key] = value
        if sizes:
            base = str(merged.get("model", "")).partition(":")[0]
            merged["model"] = base + ":" + ",".join(f"{k}={v}" for k, v in sizes.items())
        merged["out"] = str(out)
        merged.setdefault("recipe", Path(self.recipe).stem)
        cls = DistillConfig if self.kind == "distill" else TrainConfig
        where = f"{self.path} (trial {describe(values)})"
        config = from_dict(cls, merged, where)
        try:
            get_spec(config.model)  # a bad size combination is the space's error, now
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
        return config


def describe(values: dict[str, Any]) -> str:
    """``alpha=0.5, temperature=2``: a trial's values in one short line."""
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "no parameters"


def _param(key: str, spec: Any, where: str) -> Param:
    if isinstance(spec, list):
        values = tuple(spec)
    elif isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list):
        values = tuple(spec["choices"])
    elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
        low, high = spec["low"], spec["high"]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            raise UserError(f"{where}: params.{key}: low and high must be numbers, low < high")
        log = spec.get("log", False)
        if not isinstance(log, bool) or (log and low <= 0):
            raise UserError(
                f"{where}: params.{key}: log must be true or false (true needs low > 0)"
            )
        integer = isinstance(low, int) and isinstance(high, int)
        return Param(key, low=low, high=high, log=log, integer=integer)
    else:
        raise UserError(
            f"{where}: params.{key} must be a list of values, {{choices: [...]}} or "
            "{low: X, high: Y[, log: true]}"
        )
    if not values:
        raise UserError(f"{where}: params.{key} has no values")
    return Param(key, values=values)


def load_space(path: Path) -> SearchSpace:
    """Read and check ``path`` whole (see the module's docstring); one-line errors name the key."""
    if not path.is_file():
        raise UserError(f"search space {path} does not exist")
    data = read_yaml(path)
    where = str(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(TOP_KEYS))}")
    recipe = data.get("recipe")
    if not isinstance(recipe, str) or not recipe:
        raise UserError(f"{where}: 'recipe' must name a train or distill recipe")
    kind, recipe_path = _find_any_recipe(recipe, where)
    fixed = data.get("set") or {}
    params_spec = data.get("params") or {}
    if not isinstance(fixed, dict) or not isinstance(params_spec, dict) or not params_spec:
        raise UserError(f"{where}: 'set' must be a mapping and 'params' a non-empty mapping")
    cls = DistillConfig if kind == "distill" else TrainConfig
    fields = set(cls.__dataclass_fields__) - {"out", "recipe"}
    for key in [*fixed, *params_spec]:
        size = key[len(MODEL_PREFIX) :] if key.startswith(MODEL_PREFIX) else None
        if (size is None and key not in fields) or (size is not None and size not in RESIZABLE):
            raise UserError(
                f"{where}: {key!r} is not a key of {kind} recipe {recipe} (nor model.SIZE with "
                f"SIZE one of {', '.join(RESIZABLE)})"
            )
    params = tuple(_param(key, spec, where) for key, spec in params_spec.items())
    sampler = data.get("sampler", "grid")
    if sampler not in ("grid", "tpe"):
        raise UserError(f"{where}: sampler is {sampler!r}; choose grid or tpe")
    ranges = [p.key for p in params if p.is_range]
    if sampler == "grid" and ranges:
        raise UserError(
            f"{where}: params.{ranges[0]} is a range, which the grid sampler cannot enumerate; "
            "give a list of values or use sampler: tpe"
        )
    trials = data.get("trials", 0 if sampler == "grid" else 20)
    seed = data.get("seed", 0)
    for name, value, low in (("trials", trials, 1 if sampler == "tpe" else 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{where}: {name} is {value!r}; allowed: an integer >= {low}")
    metrics = data.get("metrics", ["dev_ce"])
    if isinstance(metrics, str):
        metrics = [metrics]
    from tinyminds.evaluation.tasks import TASKS

    for metric in metrics:
        if metric not in METRICS and metric not in TASKS:
            known = ", ".join([*METRICS, *TASKS])
            raise UserError(f"{where}: unknown metric {metric!r}; metrics: {known}")
    eval_data = data.get("eval_data")
    if any(m not in METRICS for m in metrics) and not eval_data:
        raise UserError(
            f"{where}: an evaluation metric needs eval_data: (the evaluation data folder)"
        )
    space = SearchSpace(
        path=path,
        recipe=recipe,
        kind=kind,
        fixed=fixed,
        params=params,
        sampler=sampler,
        trials=len(_grid_size(params)) if sampler == "grid" else trials,
        seed=seed,
        metrics=tuple(metrics),
        eval_data=Path(eval_data) if eval_data else None,
        recipe_values=read_yaml(recipe_path),
    )
    # Every trial's config, before anything is written: each grid point, or each range's ends.
    probes = space.grid() if sampler == "grid" else _range_probes(params)
    for values in probes:
        space.config(values, Path("trial"))
    return space


def _grid_size(params: tuple[Param, ...]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*(p.values for p in params)))


def _range_probes(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    """One trial per end of every range and per listed value (the rest at their first value)."""
    first = {p.key: p.values[0] if p.values else p.low for p in params}
    probes = [first]
    for p in params:
        for value in p.values[1:] if p.values else (p.high,):
            probes.append({**first, p.key: value})
    return probes


def _find_any_recipe(recipe: str, where: str) -> tuple[str, Path]:
    """(kind, file) of a shipped recipe's name, or of a recipe file (a distill one has teachers)."""
    for kind in ("train", "distill"):
        candidate = RECIPES_DIR / kind / f"{recipe}.yaml"
        if candidate.is_file():
            return kind, candidate
    path = Path(recipe)
    if path.is_file():
        return ("distill" if "teachers" in read_yaml(path) else "train"), path
    raise UserError(f"{where}: recipe {recipe!r} is neither a shipped recipe nor a file")
