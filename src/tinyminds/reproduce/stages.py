"""The paper's experiment grid as data, and the stages that run it (`tinyminds reproduce`).

`GRID` lists every model of the paper's Tables 2 and 3 that the students need: the teachers
(GPT2-44M and Llama-60M for DistilledGPT-44M and MATE-KD; GPT2-705M and Llama-360M for
BabyLlama-58M and ContrastiveLlama-58M), the no-distillation baselines (GPT2-44M trained alone is
the GPT2-44M teacher itself; Llama-58M trained alone with the students' hyperparameters), the
MATE-KD generator (ELECTRA-56M, a masked LM) and the four students. Each entry names its recipe at
each scale:

- ``paper``: the paper's recipes (Table 1 hyperparameters); needs a GPU.
- ``mini``: a babylm-mini-sized corpus and a 16,000-token BPE, 300 optimizer steps of the
  scaled-down recipes per model (a quarter of an epoch of babylm-mini, about an hour and a half
  for the grid on 2 CPU cores; ``--max-steps 0`` trains whole epochs): the small pair of teachers is
  ``gpt2-tiny`` + ``llama-tiny``, the large pair ``gpt2-small`` + ``llama-small``, the students
  and baselines ``gpt2-tiny`` / ``llama-tiny``; evaluation on every pair.
- ``tiny``: the same models on the embedded Shakespeare corpus with a 4,000-token BPE, 60
  optimizer steps per model, and evaluation capped at 50 pairs per subtask: minutes on 2 CPU
  cores (the demo).

`build_stages` turns the grid into `graph.Stage` objects: ``prepare`` -> one stage per model
(named as the paper's model, lower case) -> ``eval-MODEL`` for every causal LM -> ``compare``
(DistilledGPT-44M against BabyLlama-58M: the paper's Wilcoxon tests). A recipe that is not
registered (a grid edited to name a recipe file that does not exist) makes its stage
unavailable: it and its evaluation are skipped, and the report says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinyminds.config import to_dict
from tinyminds.data.prepare import PrepareOptions
from tinyminds.errors import UserError
from tinyminds.evaluation.tasks import TASKS
from tinyminds.recipes import find_recipe, load_distill_config, load_train_config
from tinyminds.reproduce.graph import Stage, StageContext

GENERATOR_KEY = "generator"
"""The distillation config key naming the MATE-KD generator's model folder."""
PATH_KEYS = ("data", "out", "teachers", GENERATOR_KEY, "cache_dir")
LATER_KEYS = {
    "milestones": "none",
    "milestone_words": [],
    "divergence": "forward_kl",
    "skew_alpha": 0.1,
    "jsd_beta": 0.5,
    "taid_t_start": 0.4,
    "taid_t_end": 1.0,
    "taid_momentum": 0.99,
    "taid_step": 5e-4,
}
"""Config keys added after the first stage keys, with their defaults: left out of a stage's key
while at their default, so that run folders written before them stay done."""
"""Config keys that hold paths: left out of a stage's key (its inputs' keys stand for them)."""


@dataclass(frozen=True)
class Scale:
    name: str
    vocab_size: int
    max_steps: int
    """Optimizer steps per training stage (0: the recipes' whole epochs)."""
    eval_max_items: int | None
    """Pairs scored per subtask (None: all)."""
    description: str
    default_corpus: bool = False
    """The embedded Shakespeare corpus is used when no corpus is given."""
    glue_epochs: int | None = None
    """GLUE fine-tuning epochs (``--glue``; None: the recipe's 32)."""
    glue_max_train_examples: int | None = None
    """GLUE training examples per task (``--glue``; None: all)."""
    selection: str = ""
    """How this scale's settings were chosen (printed in the report's quality section)."""
    eval_every: int = 0
    """Validate every this many steps in every training stage (0: the recipes' own)."""
    eval_chunks: int = 0
    """Dev chunks of every validation (0: the recipes' own); the same chunks for every model."""

    @property
    def glue_recipe(self) -> dict[str, int]:
        """The GLUE recipe's fields this scale overrides."""
        fields = {"epochs": self.glue_epochs, "max_train_examples": self.glue_max_train_examples}
        return {key: value for key, value in fields.items() if value is not None}


SCALES = {
    "tiny": Scale(
        "tiny",
        4_000,
        100,
        50,
        "scaled-down models, 100 steps each (validated every 10 on 256 dev chunks), on the "
        "embedded Shakespeare corpus (2 CPU cores)",
        default_corpus=True,
        eval_every=10,
        eval_chunks=256,
        glue_epochs=1,
        glue_max_train_examples=64,
    ),
    "mini": Scale(
        "mini",
        8_000,
        0,
        None,
        "4-6 layer, 256-wide models on a babylm-mini-sized corpus with an 8,000-token BPE, each "
        "recipe's own step budget (the mini recipes), validated ten times per model, every "
        "evaluation pair (2 CPU cores: the DistilledGPT-44M chain sized for an hour)",
        glue_epochs=3,
        glue_max_train_examples=2_000,
        selection="The mini recipes' learning rates, steps and distillation settings were chosen "
        "on dev cross-entropy only (docs/results/mini-2026-12-05/README.md lists what was tried).",
    ),
    "paper": Scale("paper", 16_000, 0, None, "the paper's recipes on the BabyLM corpus (GPU)"),
}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the grid."""

    stage: str
    """The stage's name: the paper's model name in lower case."""
    paper_name: str
    role: str
    """``teacher``, ``baseline``, ``generator``, ``student`` or ``floor`` (the untrained model)."""
    table: int
    """The paper table its scores go to: 2 (students), 3 (teachers, baselines), 0 (none)."""
    kind: str
    """``train``, ``distill`` or ``init`` (the recipe's model at initialisation, not trained)."""
    recipes: dict[str, str]
    """Scale -> recipe name."""
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Scale -> ``key=value`` overrides of the recipe."""
    teachers: tuple[str, ...] = ()
    """Stages whose models are the teachers."""
    generator: str | None = None
    """The stage whose model is the MATE-KD generator."""
    glue: bool = False
    """Table 4 (GLUE) model."""

    @property
    def causal_lm(self) -> bool:
        return self.role != "generator"


_SMALL = {"tiny": "gpt2-tiny", "mini": "gpt2-mini"}
_SMALL_LLAMA = {"tiny": "llama-tiny", "mini": "llama-mini"}
_STUDENT_SETTINGS = ("weight_decay=0.1",)
_TINY_KD = ("kl_reduction=token",)
"""The students' KL at the tiny scale: per-token, the mini scale's choice on dev cross-entropy
(docs/results/mini-2026-12-05), not BabyLlama's per-sequence sum of the tiny recipes."""
_MINI_LLAMA_BUDGET = ("max_steps=600", "warmup_steps=60", "eval_every=60")
"""The Llama students' family at the mini scale (their large teachers, the Llama-58M baseline and
the three students) trains 600 steps, not the DistilledGPT-44M chain's 900, sized from measured
step speeds so that the whole grid would fit in 3 hours on 2 CPU cores (not yet run whole); within
the family every model has the same budget."""

GRID: tuple[ModelEntry, ...] = (
    ModelEntry(
        "untrained",
        "Untrained GPT2-44M",
        "floor",
        3,
        "init",
        {**_SMALL, "paper": "gpt2-44m"},
    ),
    ModelEntry("gpt2-44m", "GPT2-44M", "teacher", 3, "train", {**_SMALL, "paper": "gpt2-44m"}),
    ModelEntry(
        "llama-60m", "Llama-60M", "teacher", 3, "train", {**_SMALL_LLAMA, "paper": "llama-60m"}
    ),
    ModelEntry(
        "gpt2-705m",
        "GPT2-705M",
        "teacher",
        3,
        "train",
        {"tiny": "gpt2-small", "mini": "gpt2-mini-large", "paper": "gpt2-705m"},
    ),
    ModelEntry(
        "llama-360m",
        "Llama-360M",
        "teacher",
        3,
        "train",
        {"tiny": "llama-small", "mini": "llama-mini-large", "paper": "llama-360m"},
    ),
    ModelEntry(
        "llama-58m",
        "Llama-58M",
        "baseline",
        3,
        "train",
        {**_SMALL_LLAMA, "paper": "llama-58m"},
        overrides={"tiny": _STUDENT_SETTINGS, "mini": (*_STUDENT_SETTINGS, *_MINI_LLAMA_BUDGET)},
    ),
    ModelEntry(
        "electra-56m",
        "ELECTRA-56M",
        "generator",
        0,
        "train",
        {"tiny": "electra-tiny", "mini": "electra-mini", "paper": "electra-56m"},
    ),
    ModelEntry(
        "distilledgpt-44m",
        "DistilledGPT-44M",
        "student",
        2,
        "distill",
        {"tiny": "distill-tiny", "mini": "distill-mini", "paper": "distilledgpt-44m"},
        overrides={"tiny": _TINY_KD},
        teachers=("gpt2-44m", "llama-60m"),
        glue=True,
    ),
    ModelEntry(
        "babyllama-58m",
        "BabyLlama-58M",
        "student",
        2,
        "distill",
        {"tiny": "distill-tiny", "mini": "distill-mini", "paper": "babyllama-58m"},
        overrides={
            "tiny": ("model=llama-tiny", *_TINY_KD),
            "mini": ("model=llama-small", *_MINI_LLAMA_BUDGET),
        },
        teachers=("gpt2-705m", "llama-360m"),
        glue=True,
    ),
    ModelEntry(
        "contrastivellama-58m",
        "ContrastiveLlama-58M",
        "student",
        2,
        "distill",
        {"tiny": "contrastive-tiny", "mini": "contrastive-mini", "paper": "contrastivellama-58m"},
        overrides={"tiny": _TINY_KD},
        teachers=("gpt2-705m", "llama-360m"),
    ),
    ModelEntry(
        "maskedadversarialllama-58m",
        "MaskedAdversarialLlama-58M",
        "student",
        2,
        "distill",
        {"tiny": "mate-tiny", "mini": "mate-mini", "paper": "maskedadversarialllama-58m"},
        overrides={"tiny": _TINY_KD},
        teachers=("gpt2-44m", "llama-60m"),
        generator="electra-56m",
    ),
)
GRID_BY_STAGE = {entry.stage: entry for entry in GRID}
COMPARED = ("distilledgpt-44m", "babyllama-58m")
"""The paper's Wilcoxon tests: DistilledGPT-44M against BabyLlama-58M."""


@dataclass
class Settings:
    """What one `tinyminds reproduce` run was asked for."""

    scale: Scale
    corpus: Path | None
    """The corpus folder (None: the embedded corpus, written into the run folder)."""
    eval_folder: Path | None
    """The evaluation data (None: no evaluation stages)."""
    eval_tasks: list[str]
    max_steps: int
    eval_max_items: int | None
    glue: bool = False
    device: str = "auto"
    eval_threads: int = 0
    """torch threads while scoring (0: torch's default)."""
    overrides: dict[str, list[str]] = field(default_factory=dict)
    """Stage -> extra ``key=value`` overrides of its recipe (``--set STAGE.key=value``)."""
    seeds: tuple[int, ...] = ()
    """Train every model once per seed (``--seeds``); empty: once, with the recipes' own seed.
    The first seed's stages keep the model's name, the others' end in ``-seedN``."""


@dataclass(frozen=True)
class Member:
    """One model of the grid trained with one seed: a model stage (and its evaluation)."""

    entry: ModelEntry
    seed: int | None
    """The seed every training stage of this member gets (None: the recipe's own)."""
    suffix: str = ""
    """``-seedN`` for every seed but the first (whose stages keep the model's name)."""

    @property
    def stage(self) -> str:
        return self.entry.stage + self.suffix

    def of(self, stage: str) -> str:
        """The stage of model ``stage`` trained with this member's seed (a teacher, a generator)."""
        return stage + self.suffix

    @property
    def label(self) -> str:
        """The paper's name, with the seed where several seeds were asked for."""
        return self.entry.paper_name + (f" (seed {self.seed})" if self.suffix else "")


def members(settings: Settings) -> list[Member]:
    """Every (model, seed) of the run, seed by seed in grid order. The untrained floor is one
    model whatever the seeds: the first seed's."""
    if not settings.seeds:
        return [Member(entry, None) for entry in GRID]
    found = []
    for index, seed in enumerate(settings.seeds):
        suffix = f"-seed{seed}" if index else ""
        found += [
            Member(entry, seed, suffix) for entry in GRID if not (index and entry.role == "floor")
        ]
    return found


def hash_files(folder: Path, patterns: tuple[str, ...] = ("**/*",)) -> str:
    """SHA-256 over the relative paths and contents of the files in ``folder`` matching
    ``patterns`` (sorted), so that a renamed, added or edited file changes it."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _overrides(member: Member, settings: Settings) -> list[str]:
    entry = member.entry
    overrides = list(entry.overrides.get(settings.scale.name, ()))
    overrides += settings.overrides.get(entry.stage, [])
    if settings.max_steps:
        overrides.append(f"max_steps={settings.max_steps}")
    if settings.device != "auto":
        overrides.append(f"device={settings.device}")
    if settings.scale.eval_every:
        overrides.append(f"eval_every={settings.scale.eval_every}")
    if settings.scale.eval_chunks:
        overrides.append(f"eval_chunks={settings.scale.eval_chunks}")
    if member.seed is not None:
        overrides.append(f"seed={member.seed}")
    return overrides


def resolved_config(member: Member, settings: Settings, extra: list[str]) -> Any:
    """The config ``member`` trains with: its recipe at the scale, the grid's and the user's
    overrides, the seed, then ``extra`` (paths)."""
    entry = member.entry
    recipe = entry.recipes[settings.scale.name]
    load = load_distill_config if entry.kind == "distill" else load_train_config
    return load(recipe, [*_overrides(member, settings), *extra])


def _unavailable(member: Member, settings: Settings) -> str | None:
    """Why ``member`` cannot run at this scale (an unregistered recipe, or a MATE-KD recipe without
    the generator key), or None; any other config error is the user's, raised at once."""
    entry = member.entry
    recipe = entry.recipes[settings.scale.name]
    try:
        find_recipe(recipe, "distill" if entry.kind == "distill" else "train")
    except UserError:
        return f"recipe {recipe} is not registered (no {entry.paper_name} in this tinyminds yet)"
    extra = [f"{GENERATOR_KEY}=generator"] if entry.generator else []
    try:
        resolved_config(member, settings, extra)
    except UserError as error:
        if entry.generator and GENERATOR_KEY in str(error):  # MATE-KD named its key otherwise
            return f"recipe {recipe} takes no {GENERATOR_KEY}= ({error})"
        raise UserError(f"{member.stage} (recipe {recipe}): {error}") from None
    return None


def _model_spec(member: Member, settings: Settings) -> dict[str, Any]:
    extra = [f"{GENERATOR_KEY}=generator"] if member.entry.generator else []
    config = to_dict(resolved_config(member, settings, extra))
    if member.entry.kind == "init":  # an untrained model: its weights and the dev subset only
        kept = ("recipe", "model", "seed", "eval_chunks", "eval_seed", "eval_batch_size")
        return {"kind": "init", "config": {k: config[k] for k in kept}}
    return {
        "kind": member.entry.kind,
        "config": {
            k: v
            for k, v in config.items()
            if k not in PATH_KEYS and not (k in LATER_KEYS and v == LATER_KEYS[k])
        },
    }


def _measure_gpu() -> Callable[[], dict[str, Any]]:
    """Reset the GPU's peak-memory counter; the returned function reads it (empty on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return dict
    torch.cuda.reset_peak_memory_stats()
    return lambda: {"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def _prepare_stage(settings: Settings) -> Callable[[StageContext], dict[str, Any]]:
    def run(context: StageContext) -> dict[str, Any]:
        from tinyminds.data.prepare import prepare

        assert settings.corpus is not None
        manifest = prepare(
            settings.corpus,
            context.folder / "data",
            PrepareOptions(vocab_size=settings.scale.vocab_size),
        )
        train = manifest["splits"]["train"]
        return {
            "corpus": str(settings.corpus),
            "layout": manifest["layout"],
            "words": train["words"],
            "tokens": train["tokens"],
            "chunks": train["chunks"],
            "chunk_size": train["chunk_size"],
            "dev_chunks": manifest["splits"]["dev"]["chunks"],
            "vocab_size": manifest["tokenizer"]["vocab_size"],
        }

    return run


def model_dir(folder: Path) -> Path:
    """The Hugging Face model folder inside a model stage's folder."""
    return folder / "run" / "model"


def _untrained_model(config: Any, data_dir: Path, target: Path) -> dict[str, Any]:
    """Export the recipe's model as the engine initialises it (same seed, no step) and measure its
    dev CE on the run's validation subset: the floor every trained model must rise above."""
    import torch

    from tinyminds import __version__
    from tinyminds.data.chunks import load_prepared
    from tinyminds.evaluation.dev_ce import dev_cross_entropy
    from tinyminds.models.zoo import build_model, get_spec
    from tinyminds.training.engine import export_model

    data = load_prepared(data_dir)
    torch.manual_seed(config.seed)  # as the engine does before building a model
    model = build_model(get_spec(config.model), data.vocab_size)
    ce = dev_cross_entropy(
        model, data, config.eval_chunks, config.eval_seed, config.eval_batch_size
    )
    parameters = sum(p.numel() for p in model.parameters())
    info_record = {
        "tinyminds_version": __version__,
        "recipe": config.recipe,
        "model": config.model,
        "parameters": parameters,
        "step": 0,
        "words_seen": 0,
        "untrained": True,
        "validation": {"ce": ce},
        "tokenizer_hash": data.tokenizer_hash,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, data, target, info_record)
    return {
        "recipe": config.recipe,
        "model": config.model,
        "parameters": parameters,
        "best_epoch": 0,
        "best_val_ce": ce,
        "steps": 0,
        "epochs": 0,
        "max_steps": 0,
        "tokens_per_step": 0,
        "train_seconds": 0.0,
        "tokens_per_second": 0.0,
        "words_seen": 0,
    }


def _model_stage(member: Member, settings: Settings) -> Callable[[StageContext], dict[str, Any]]:
    entry = member.entry

    def run(context: StageContext) -> dict[str, Any]:
        extra = [f"data={context.inputs['prepare'] / 'data'}", f"out={context.folder / 'run'}"]
        if entry.teachers:
            teachers = ",".join(
                str(model_dir(context.inputs[member.of(t)])) for t in entry.teachers
            )
            extra.append(f"teachers=[{teachers}]")
        if entry.generator:
            extra.append(f"{GENERATOR_KEY}={model_dir(context.inputs[member.of(entry.generator)])}")
        config = resolved_config(member, settings, extra)
        if entry.kind == "init":
            return _untrained_model(config, Path(config.data), model_dir(context.folder))
        peak = _measure_gpu()
        if entry.kind == "train":
            from tinyminds.training.engine import train

            result = train(config, resume=True)
        else:
            from tinyminds.training.objectives.distillation import distill

            result = distill(config, resume=True)
        return {
            "recipe": config.recipe,
            "model": config.model,
            "parameters": result.parameters,
            "best_epoch": result.best_epoch,
            "best_val_ce": result.best_val_ce,
            "steps": result.steps,
            "epochs": config.epochs,
            "max_steps": config.max_steps,
            "tokens_per_step": config.batch_size * config.grad_accum * 128,
            "train_seconds": result.seconds,
            "setup_seconds": result.setup_seconds,
            "tokens_per_second": result.tokens_per_second,
            "words_seen": result.words_seen,
            **peak(),
        }

    return run


def _eval_stage(
    member: Member, tasks: list[str], glue_recipe: dict[str, int], settings: Settings
) -> Callable[[StageContext], dict[str, Any]]:
    """``glue_recipe``: the scale's GLUE overrides, the same dict that keys the stage."""

    def run(context: StageContext) -> dict[str, Any]:
        import torch

        from tinyminds.evaluation.zero_shot import evaluate

        assert settings.eval_folder is not None
        threads = torch.get_num_threads()
        if settings.eval_threads:
            torch.set_num_threads(settings.eval_threads)
        peak = _measure_gpu()
        try:
            evaluation = evaluate(
                model_dir(context.inputs[member.stage]),
                tasks,
                [settings.eval_folder],
                context.folder,
                name=member.stage,
                max_items=settings.eval_max_items,
                device=settings.device,
                **glue_recipe,
            )
        finally:
            torch.set_num_threads(threads)
        return {"results": evaluation.json_path.name, "tasks": tasks, **peak()}

    return run


def _compare_stage(suffix: str) -> Callable[[StageContext], dict[str, Any]]:
    def run(context: StageContext) -> dict[str, Any]:
        from tinyminds.evaluation.compare import compare

        names = [name + suffix for name in COMPARED]
        compare([context.inputs[f"eval-{name}"] / f"{name}.json" for name in names], context.folder)
        return {"comparison": "comparison.json"}

    return run


def build_stages(settings: Settings) -> list[Stage]:
    """The stages of the grid at ``settings.scale`` (see the module's docstring)."""
    options = asdict(PrepareOptions(vocab_size=settings.scale.vocab_size))
    corpus = settings.corpus
    assert corpus is not None, "reproduce writes the default corpus before building the stages"
    stages = [
        Stage(
            "prepare",
            (),
            {"kind": "prepare", "corpus": hash_files(corpus), "options": options},
            _prepare_stage(settings),
            group="data",
        )
    ]
    for member in members(settings):
        entry = member.entry
        unavailable = _unavailable(member, settings)
        spec = {"kind": entry.kind} if unavailable else _model_spec(member, settings)
        deps = (
            "prepare",
            *(member.of(t) for t in entry.teachers),
            *((member.of(entry.generator),) if entry.generator else ()),
        )
        stages.append(
            Stage(
                member.stage,
                deps,
                spec,
                _model_stage(member, settings),
                unavailable=unavailable,
                group=f"{entry.role}s",
            )
        )
    if settings.eval_folder is None:
        return stages
    patterns = tuple(f"{TASKS[t].folder}/*.jsonl" for t in settings.eval_tasks)
    eval_hash = hash_files(settings.eval_folder, patterns)
    glue_hash = (
        hash_files(settings.eval_folder, ("glue_filtered/*.jsonl",)) if settings.glue else ""
    )
    for member in members(settings):
        entry = member.entry
        if not entry.causal_lm:
            continue
        tasks = list(settings.eval_tasks)
        if settings.glue and entry.glue:
            tasks.append("glue")
        glue_recipe = settings.scale.glue_recipe if "glue" in tasks else {}
        spec = {
            "kind": "evaluate",
            "tasks": tasks,
            "data": eval_hash,
            "glue_data": glue_hash if "glue" in tasks else "",
            "glue_recipe": glue_recipe,
            "max_items": settings.eval_max_items,
        }
        stages.append(
            Stage(
                f"eval-{member.stage}",
                (member.stage,),
                spec,
                _eval_stage(member, tasks, glue_recipe, settings),
                group="evaluation",
            )
        )
    for suffix in sorted({member.suffix for member in members(settings)}):
        stages.append(
            Stage(
                f"compare{suffix}",
                tuple(f"eval-{name}{suffix}" for name in COMPARED),
                {"kind": "compare", "tests": "wilcoxon signed-rank + rank-sum (scipy)"},
                _compare_stage(suffix),
                group="comparison",
            )
        )
    return stages
