"""``RUN_DIR/report.md`` and its charts, written from the finished stages of a reproduce run.

Everything is read back from the stage folders (``stage.json`` records, each model's
``metrics.jsonl``, each evaluation's ``NAME.json``, the comparison's ``comparison.json``), so the
report of a resumed run covers the stages reused from earlier runs too. Tables 2 and 3 put each
measured score beside the paper's (`tinyminds.evaluation.published`); scores are in percent with
one decimal, the unweighted mean over subtasks as `tinyminds evaluate` computes it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from tinyminds import __version__
from tinyminds.evaluation.published import match_published
from tinyminds.models.zoo import count_parameters, get_spec
from tinyminds.reproduce.graph import Graph, RunSummary
from tinyminds.reproduce.stages import (
    COMPARED,
    GRID_BY_STAGE,
    Member,
    ModelEntry,
    Settings,
    members,
    model_dir,
)
from tinyminds.training.exposure import STRICT_SMALL_WORDS
from tinyminds.training.metrics import read_metrics

BABYLM_10M_WORDS = 9_936_281
"""Words in the BabyLM 2024 train_10M corpus (SPEC §1): the projection's full corpus."""
ZERO_SHOT = (("blimp", "BLiMP filtered"), ("supplement", "BLiMP supplement"), ("ewok", "EWoK"))
GLUE_ORDER = (
    "boolq",
    "cola",
    "mnli",
    "mnli-mm",
    "mrpc",
    "multirc",
    "qnli",
    "qqp",
    "rte",
    "sst2",
    "wsc",
)


def machine() -> dict[str, Any]:
    """What the run ran on: OS, Python, CPU cores, torch, and the GPU if any."""
    import torch

    record: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        import transformers

        record["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        record["gpu"] = "none"
    return record


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _header(cells: list[str], text_columns: int = 1) -> list[str]:
    """A table's header and alignment rows: the first ``text_columns`` left, numbers right."""
    return [_row(cells), _row(["---"] * text_columns + ["---:"] * (len(cells) - text_columns))]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _results(graph: Graph, stage: str) -> dict[str, Any] | None:
    """The results document of ``eval-STAGE``, if that stage is done."""
    name = f"eval-{stage}"
    if name not in graph.stages or graph.record(name) is None:
        return None
    path = graph.folder(name) / f"{stage}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _published(entry: ModelEntry) -> dict[str, float]:
    found = [p for p in match_published(entry.paper_name) if p.label == "paper"]
    return found[0].scores if found else {}


def _published_glue(entry: ModelEntry) -> dict[str, float]:
    found = [p for p in match_published(entry.paper_name) if p.label == "paper"]
    return found[0].glue if found else {}


def shown(graph: Graph, settings: Settings, *, trained_only: bool = False) -> list[Member]:
    """The members a table lists: those whose model stage has run and, unless ``trained_only``,
    every model of the first seed too (a row of dashes where it has not run)."""
    return [
        m
        for m in members(settings)
        if graph.record(m.stage) is not None or not (m.suffix or trained_only)
    ]


def measured_scores(graph: Graph, stage: str) -> dict[str, float]:
    """Task -> measured score in percent of model stage ``stage`` (tasks not evaluated are
    absent)."""
    results = _results(graph, stage)
    if results is None:
        return {}
    return {task: 100 * value["accuracy"] for task, value in results["tasks"].items()}


def _model_record(graph: Graph, stage: str) -> dict[str, Any] | None:
    record = graph.record(stage)
    return None if record is None else record["record"]


def _config(graph: Graph, stage: str) -> dict[str, Any]:
    return graph.stages[stage].spec.get("config", {})


def table_1(graph: Graph, settings: Settings, vocab_size: int) -> list[str]:
    lines = _header(
        [
            "model",
            "role",
            "recipe",
            "teachers",
            "arch",
            "hidden",
            "layers",
            "heads",
            "MLP",
            "parameters",
            "lr",
            "batch x accum",
            "epochs",
            "warm-up",
            "steps run",
        ],
        text_columns=5,
    )
    for member in shown(graph, settings):
        entry = member.entry
        config = _config(graph, member.stage)
        recipe = entry.recipes[settings.scale.name]
        if not config:
            lines.append(_row([member.label, entry.role, recipe, _teachers(entry), *["–"] * 11]))
            continue
        spec = get_spec(config["model"])
        record = _model_record(graph, member.stage)
        extra = 0 if spec.is_causal_lm else 1  # the generator's [MASK]
        parameters = record["parameters"] if record else count_parameters(spec, vocab_size + extra)
        steps = f"{record['steps']:,}" if record else "–"
        lines.append(
            _row(
                [
                    member.label,
                    entry.role,
                    recipe if recipe == spec.name else f"{recipe} ({spec.name})",
                    _teachers(entry),
                    spec.arch,
                    spec.hidden,
                    spec.layers,
                    spec.heads,
                    spec.intermediate,
                    f"{parameters:,}",
                    f"{config['lr']:g}" if "lr" in config else "–",
                    f"{config['batch_size']} x {config['grad_accum']}" if "lr" in config else "–",
                    config.get("epochs", "–"),
                    config.get("warmup_steps", "–"),
                    steps,
                ]
            )
        )
    return lines


def _teachers(entry: ModelEntry) -> str:
    names = [GRID_BY_STAGE[t].paper_name for t in entry.teachers]
    if entry.generator:
        names.append(f"generator {GRID_BY_STAGE[entry.generator].paper_name}")
    return ", ".join(names) or "–"


def score_table(graph: Graph, settings: Settings, table: int) -> list[str]:
    """Table 2 (students) or 3 (teachers and baselines): measured beside published, in %."""
    cells = ["model"]
    for _, label in ZERO_SHOT:
        cells += [label, f"{label} (paper)"]
    lines = _header(cells)
    for member in shown(graph, settings, trained_only=True):
        entry = member.entry
        if entry.table != table:
            continue
        measured = measured_scores(graph, member.stage)
        published = _published(entry)
        row = [member.label]
        for task, _ in ZERO_SHOT:
            row += [_pct(measured.get(task)), _pct(published.get(task))]
        lines.append(_row(row))
    return lines


def table_4(graph: Graph, settings: Settings) -> list[str] | None:
    """GLUE of the Table 4 models where it was run; None where it was not."""
    chosen = [member for member in members(settings) if member.entry.glue]
    glue = {m.stage: (_results(graph, m.stage) or {}).get("glue") for m in chosen}
    chosen = [member for member in chosen if not member.suffix or glue[member.stage]]
    if not any(glue.values()):
        return None
    cells = ["GLUE task"]
    for member in chosen:
        cells += [member.label, f"{member.label} (paper)", f"{member.label} majority"]
    lines = _header(cells)
    for task in GLUE_ORDER:
        row = [task]
        for member in chosen:
            entry = member.entry
            section = glue[member.stage] or {}
            measured = section.get("tasks", {}).get(task, {})
            score = measured.get("score")
            baseline = measured.get("baseline")
            row += [
                _pct(None if score is None else 100 * score),
                _pct(_published_glue(entry).get(task)),
                _pct(None if baseline is None else 100 * baseline),
            ]
        lines.append(_row(row))
    row = ["macro (9 tasks, no CoLA)"]
    for member in chosen:
        entry = member.entry
        macro = (glue[member.stage] or {}).get("macro", {})
        score, baseline = macro.get("score"), macro.get("baseline")
        row += [
            _pct(None if score is None else 100 * score),
            _pct(_published(entry).get("glue")),
            _pct(None if baseline is None else 100 * baseline),
        ]
    lines.append(_row(row))
    notes = []
    for member in chosen:
        section = glue[member.stage]
        if not section:
            continue
        changed = ", ".join(f"{k} {v}" for k, v in section.get("overrides", {}).items())
        missing = "; ".join(
            f"{task}: {e['missing']}"
            for task, e in section.get("tasks", {}).items()
            if "missing" in e
        )
        notes.append(
            f"- {member.label}: "
            + (f"the paper's recipe with {changed}" if changed else "the paper's recipe")
            + (f"; not scored: {missing}" if missing else "")
            + "."
        )
    return [*lines, "", *notes] if notes else lines


def wilcoxon_section(graph: Graph) -> list[str]:
    """The paper's tests (DistilledGPT-44M against BabyLlama-58M), one table per seed."""
    names = " and ".join(GRID_BY_STAGE[s].paper_name for s in COMPARED)
    compared = [name for name in graph.order if name.split("-seed")[0] == "compare"]
    done = [name for name in compared if graph.record(name) is not None]
    if not done:
        return [f"Not run: the tests need the evaluations of {names}."]
    lines = [
        f"Paired over subtasks, {names} (scipy; two-sided signed-rank test with zero differences "
        "dropped, and the rank-sum test the paper also reports). Mean difference in points, "
        f"{GRID_BY_STAGE[COMPARED[0]].paper_name} minus {GRID_BY_STAGE[COMPARED[1]].paper_name}.",
    ]
    for name in done:
        document = json.loads((graph.folder(name) / "comparison.json").read_text(encoding="utf-8"))
        seed = name.partition("-seed")[2]
        lines += ["", f"Seed {seed}:"] if seed else []
        lines += [
            "",
            *_header(["task", "n", "n≠0", "mean diff", "signed-rank W", "p", "rank-sum z", "p"]),
        ]
        for c in document["comparisons"]:
            labels = dict(ZERO_SHOT)
            lines.append(
                _row(
                    [
                        labels.get(c["task"], c["task"]),
                        c["n"],
                        c["nonzero"],
                        "–" if c["mean_difference"] is None else f"{c['mean_difference']:+.2f}",
                        _num(c["wilcoxon_statistic"]),
                        _num(c["wilcoxon_p"]),
                        _num(c["ranksum_statistic"]),
                        _num(c["ranksum_p"]),
                    ]
                )
            )
    return lines


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _rss(document: dict[str, Any]) -> str:
    """A stage's peak RSS cell: starred where it is the process's peak so far, not the stage's."""
    peak = document.get("peak_rss_mib")
    if peak is None:
        return "–"
    return f"{peak}" if document.get("peak_rss_scope") == "stage" else f"{peak}*"


def _paired_blimp(graph: Graph, a: str, b: str) -> Any:
    """`paired_tests` of model stages ``a`` and ``b`` over their BLiMP filtered paradigms, or None
    where either was not scored on BLiMP."""
    from tinyminds.evaluation.compare import load_results, paired_tests

    scored = []
    for stage in (a, b):
        if _results(graph, stage) is None:
            return None
        results = load_results(graph.folder(f"eval-{stage}") / f"{stage}.json")
        if "blimp" not in results.tasks:
            return None
        scored.append(results.tasks["blimp"].subtasks)
    return paired_tests(scored[0], scored[1])


def _test_cells(tests: Any) -> list[str]:
    """n, better / worse / equal subtasks, mean difference, Wilcoxon W and p of `paired_tests`."""
    worse = tests.nonzero - tests.a_higher
    return [
        str(tests.n),
        f"{tests.a_higher} / {worse} / {tests.n - tests.nonzero}",
        "–" if tests.mean_difference is None else f"{tests.mean_difference:+.2f}",
        _num(tests.wilcoxon_statistic),
        _num(tests.wilcoxon_p),
    ]


def quality_section(graph: Graph, settings: Settings) -> list[str]:
    """Did the models learn, and did distillation pay? Dev CE of every model (the untrained model
    as the floor), each student against its teachers on dev CE and on BLiMP filtered, and every
    trained model against the floor on BLiMP filtered (paired Wilcoxon over paradigms)."""
    prepared = _model_record(graph, "prepare")
    words_per_token = prepared["words"] / max(prepared["tokens"], 1) if prepared else 0.0
    everyone = [m for m in shown(graph, settings) if m.entry.causal_lm]
    floor = next((m for m in everyone if m.entry.kind == "init"), None)
    floor_ce = (_model_record(graph, floor.stage) or {}).get("best_val_ce") if floor else None
    lines = [
        "Validation cross-entropy on the same fixed dev chunks for every model (nats per token, "
        "the exported model's: the best epoch's). "
        + (settings.scale.selection or "")
        + " BLiMP, the supplement and EWoK are test sets: nothing was chosen on them.",
        "",
        *_header(["model", "role", "steps", "words seen (M)", "dev CE", "below the floor"], 2),
    ]
    ce: dict[str, float] = {}
    for member in everyone:
        record = _model_record(graph, member.stage)
        if record is None:
            continue
        ce[member.stage] = record["best_val_ce"]
        words = record["steps"] * record["tokens_per_step"] * words_per_token / 1e6
        below = "–" if floor_ce is None or member is floor else f"{floor_ce - ce[member.stage]:.3f}"
        lines.append(
            _row(
                [
                    member.label,
                    member.entry.role,
                    f"{record['steps']:,}",
                    f"{words:.2f}",
                    f"{ce[member.stage]:.4f}",
                    below,
                ]
            )
        )
    students = [m for m in everyone if m.entry.role == "student" and m.stage in ce]
    if students:
        lines += [
            "",
            "Each student against its teachers on dev CE (the paper's claim: lower than both):",
            "",
            *_header(["student", "dev CE", "teachers' dev CE", "vs best teacher", "below both"]),
        ]
        for member in students:
            teachers = [member.of(t) for t in member.entry.teachers]
            known = [ce[t] for t in teachers if t in ce]
            if len(known) < len(teachers):
                continue
            gap = ce[member.stage] - min(known)
            lines.append(
                _row(
                    [
                        member.label,
                        f"{ce[member.stage]:.4f}",
                        ", ".join(f"{value:.4f}" for value in known),
                        f"{gap:+.4f}",
                        "yes" if gap < 0 else "no",
                    ]
                )
            )
    if floor is not None and _results(graph, floor.stage) is not None:
        rows = []
        for member in everyone:
            if member is floor:
                continue
            tests = _paired_blimp(graph, member.stage, floor.stage)
            if tests is None:
                continue
            score = measured_scores(graph, member.stage)["blimp"]
            rows.append(_row([member.label, f"{score:.1f}", *_test_cells(tests)]))
        if rows:
            floor_score = measured_scores(graph, floor.stage).get("blimp")
            lines += [
                "",
                f"BLiMP filtered against the untrained model ({_pct(floor_score)}%), paired over "
                "paradigms: better / worse / equal paradigms, the mean difference in points and "
                "the two-sided Wilcoxon signed-rank test (zero differences dropped).",
                "",
                *_header(["model", "BLiMP", "n", "better / worse / equal", "mean diff", "W", "p"]),
                *rows,
            ]
    rows = []
    for member in students:
        for teacher in member.entry.teachers:
            tests = _paired_blimp(graph, member.stage, member.of(teacher))
            if tests is not None:
                name = GRID_BY_STAGE[teacher].paper_name
                rows.append(_row([member.label, name, *_test_cells(tests)]))
    if rows:
        lines += [
            "",
            "Each student against each of its teachers on BLiMP filtered (student minus teacher; "
            "a p-value above 0.05 means the data cannot tell the two apart):",
            "",
            *_header(["student", "teacher", "n", "better / worse / equal", "mean diff", "W", "p"]),
            *rows,
        ]
    return lines


def _words(graph: Graph, stage: str, words_per_token: float) -> float | None:
    """Words a model's training read, repeats counted (its record's, else steps x tokens)."""
    record = _model_record(graph, stage)
    if record is None:
        return None
    if isinstance(record.get("words_seen"), int):
        return float(record["words_seen"])
    return record["steps"] * record["tokens_per_step"] * words_per_token


def exposure_section(graph: Graph, settings: Settings) -> list[str]:
    """Every student's words seen, with its teachers' and generator's, against the BabyLM 2025
    strict-small limit (SPEC-2025 §5)."""
    prepared = _model_record(graph, "prepare")
    words_per_token = prepared["words"] / max(prepared["tokens"], 1) if prepared else 0.0
    rows = []
    for member in shown(graph, settings, trained_only=True):
        if member.entry.role != "student":
            continue
        own = _words(graph, member.stage, words_per_token)
        sources = [member.of(t) for t in member.entry.teachers]
        if member.entry.generator:
            sources.append(member.of(member.entry.generator))
        others = [_words(graph, stage, words_per_token) for stage in sources]
        if own is None or any(words is None for words in others):
            continue
        total = own + sum(w for w in others if w is not None)
        rows.append(
            _row(
                [
                    member.label,
                    f"{own / 1e6:.2f}",
                    ", ".join(f"{w / 1e6:.2f}" for w in others if w is not None),
                    f"{total / 1e6:.2f}",
                    "yes" if own <= STRICT_SMALL_WORDS else "no",
                    "yes" if total <= STRICT_SMALL_WORDS else "no",
                ]
            )
        )
    if not rows:
        return ["No student finished with all of its teachers."]
    return [
        "Words seen in training, repeats counted (M): each student's own, its teachers' (and "
        "generator's), and the total, against the BabyLM 2025 strict-small limit of 100M words "
        "seen. Whether the teachers' passes count against a student's exposure is not settled by "
        "the rules (SPEC-2025 §5), so both are checked.",
        "",
        *_header(
            [
                "student",
                "its words",
                "teachers (and generator)",
                "total",
                "student <= 100M",
                "total <= 100M",
            ]
        ),
        *rows,
    ]


def stage_table(graph: Graph, summary: RunSummary | None) -> list[str]:
    lines = _header(
        ["stage", "state", "wall time (s)", "tokens/s", "peak GPU memory (MiB)", "peak RSS (MiB)"],
        text_columns=2,
    )
    for name in graph.order:
        document = graph.record(name)
        if document is not None:
            this_run = summary is not None and name in summary.ran
            state = "ran" if this_run else "reused"
            record = document["record"]
            speed = record.get("tokens_per_second")
            lines.append(
                _row(
                    [
                        name,
                        state,
                        f"{document['seconds']:.1f}",
                        f"{speed:,.0f}" if speed else "–",
                        record.get("peak_gpu_mib", "–"),
                        _rss(document),
                    ]
                )
            )
        else:
            why = "not run"
            if summary is not None and name in summary.failed:
                why = f"failed: {summary.failed[name]}"
            elif summary is not None and name in summary.skipped:
                why = f"skipped: {summary.skipped[name]}"
            elif graph.stages[name].unavailable:
                why = f"skipped: {graph.stages[name].unavailable}"
            lines.append(_row([name, why.replace("|", "/"), "–", "–", "–", "–"]))
    return lines


def projection(graph: Graph, settings: Settings) -> tuple[list[str], float] | None:
    """Projected training time of every finished model (first seed) on the full BabyLM 10M corpus
    for its recipe's epochs, from the measured tokens/s; None without measurements."""
    prepared = _model_record(graph, "prepare")
    if prepared is None:
        return None
    tokens_per_word = prepared["tokens"] / max(prepared["words"], 1)
    full_tokens = BABYLM_10M_WORDS * tokens_per_word
    lines = [
        f"The full corpus: {BABYLM_10M_WORDS:,} words x {tokens_per_word:.3f} tokens per word "
        f"(this run's tokenizer) = {full_tokens / 1e6:.1f}M tokens per epoch. Training loop only "
        "(the measured tokens/s); the teacher-cache pass, validation and evaluation are not "
        "included.",
        "",
        *_header(["model", "tokens/s", "epochs", "projected hours"]),
    ]
    total = 0.0
    for member in members(settings):
        record = _model_record(graph, member.stage)
        if member.suffix or not record or not record.get("tokens_per_second"):
            continue
        seconds = record["epochs"] * full_tokens / record["tokens_per_second"]
        total += seconds
        lines.append(
            _row(
                [
                    member.label,
                    f"{record['tokens_per_second']:,.0f}",
                    record["epochs"],
                    f"{seconds / 3600:.2f}",
                ]
            )
        )
    if total == 0:
        return None
    lines.append(_row(["total", "", "", f"{total / 3600:.2f}"]))
    return lines, total


def _words_seen(records: list[dict[str, Any]], words_per_step: float) -> list[float]:
    """Millions of training words seen at each record (repeats counted): the record's own count
    where it has one, else its step times the words of one step."""
    return [r.get("words", r["step"] * words_per_step) / 1e6 for r in records]


def learning_curves(graph: Graph, settings: Settings, folder: Path) -> list[Path]:
    """``learning_curves.png`` (training and validation CE of every model against the words
    seen) and ``student_losses.png`` (CE and KL of each student); the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prepared = _model_record(graph, "prepare")
    words_per_token = prepared["words"] / max(prepared["tokens"], 1) if prepared else 0.0
    runs = []
    for member in members(settings):
        record = _model_record(graph, member.stage)
        if record is None or member.entry.kind == "init":
            continue
        words_per_step = record["tokens_per_step"] * words_per_token
        metrics = read_metrics(model_dir(graph.folder(member.stage)).parent)
        runs.append((member, metrics, words_per_step))
    if not runs:
        return []
    written = []
    figure = Figure(figsize=(11, 4.6), dpi=110)
    FigureCanvasAgg(figure)
    train_axes, val_axes = figure.subplots(1, 2)
    for i, (member, records, per_step) in enumerate(runs):
        colour = f"C{i % 10}"
        label = member.label + (" (masked LM)" if not member.entry.causal_lm else "")
        train = [r for r in records if r["kind"] == "train" and "ce" in r]
        val = [r for r in records if r["kind"] == "val"]
        train_axes.plot(
            _words_seen(train, per_step), [r["ce"] for r in train], color=colour, lw=1, label=label
        )
        val_axes.plot(
            _words_seen(val, per_step),
            [r["ce"] for r in val],
            "o-",
            ms=3,
            color=colour,
            label=label,
        )
    floor = _model_record(graph, "untrained")
    if floor is not None:
        val_axes.axhline(
            floor["best_val_ce"], color="grey", linestyle="--", linewidth=0.8, label="untrained"
        )
    train_axes.set_title("training cross-entropy", fontsize=10)
    val_axes.set_title("validation cross-entropy (same dev chunks for every model)", fontsize=10)
    for axes in (train_axes, val_axes):
        axes.set_xlabel("training words seen (millions, repeats counted)")
        axes.set_ylabel("CE (nats per token)")
        axes.grid(alpha=0.3)
    val_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.tight_layout()
    path = folder / "learning_curves.png"
    figure.savefig(path, format="png")
    written.append(path)

    students = [run for run in runs if run[0].entry.role == "student"]
    if students:
        figure = Figure(figsize=(11, 4.6), dpi=110)
        FigureCanvasAgg(figure)
        ce_axes, kl_axes = figure.subplots(1, 2)
        for i, (member, records, per_step) in enumerate(students):
            colour = f"C{i % 10}"
            for axes, key in ((ce_axes, "ce"), (kl_axes, "kl")):
                train = [r for r in records if r["kind"] == "train" and key in r]
                val = [r for r in records if r["kind"] == "val" and key in r]
                axes.plot(
                    _words_seen(train, per_step),
                    [r[key] for r in train],
                    color=colour,
                    lw=1,
                    label=f"{member.label} (training)",
                )
                axes.plot(
                    _words_seen(val, per_step),
                    [r[key] for r in val],
                    "o--",
                    ms=3,
                    color=colour,
                    label=f"{member.label} (validation)",
                )
        ce_axes.set_title("students: cross-entropy to the data", fontsize=10)
        kl_axes.set_title("students: KL(teachers || student) at temperature T", fontsize=10)
        for axes in (ce_axes, kl_axes):
            axes.set_xlabel("training words seen (millions, repeats counted)")
            axes.grid(alpha=0.3)
        ce_axes.set_ylabel("CE (nats per token)")
        kl_axes.set_ylabel("KL (as the recipe reduces it)")
        kl_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        figure.tight_layout()
        path = folder / "student_losses.png"
        figure.savefig(path, format="png")
        written.append(path)
    return written


def scores_chart(graph: Graph, settings: Settings, folder: Path) -> Path | None:
    """``scores.png``: per task, each evaluated model's measured score (solid) beside the paper's
    (hatched, same colour)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [
        (m.label, measured_scores(graph, m.stage), _published(m.entry))
        for m in shown(graph, settings, trained_only=True)
    ]
    rows = [row for row in rows if row[1]]
    tasks = [(t, label) for t, label in ZERO_SHOT if any(t in row[1] for row in rows)]
    if not rows or not tasks:
        return None
    figure = Figure(figsize=(4.2 * len(tasks) + 1.0 + 0.12 * len(rows), 4.6), dpi=110)
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(tasks), squeeze=False)[0]
    xs = range(len(rows))
    for axes, (task, label) in zip(axes_list, tasks, strict=True):
        for i, (_, measured, paper) in enumerate(rows):
            colour = f"C{i % 10}"
            value = measured.get(task)
            if value is not None:
                axes.bar(i - 0.2, value, width=0.38, color=colour)
                axes.text(i - 0.2, value + 0.8, f"{value:.1f}", ha="center", fontsize=6)
            if task in paper:
                axes.bar(
                    i + 0.2, paper[task], width=0.38, color="white", edgecolor=colour, hatch="//"
                )
                axes.text(i + 0.2, paper[task] + 0.8, f"{paper[task]:.1f}", ha="center", fontsize=6)
        axes.axhline(50, color="grey", linestyle="--", linewidth=0.8)
        axes.set_xticks(list(xs), [row[0] for row in rows], rotation=40, ha="right")
        axes.tick_params(axis="x", labelsize=7)
        axes.set_ylim(0, 100)
        axes.set_title(f"{label}: measured (solid) vs paper (hatched)", fontsize=9)
        axes.set_ylabel("score (%; dashed: chance)")
    figure.tight_layout()
    path = folder / "scores.png"
    figure.savefig(path, format="png")
    return path


def write_report(
    graph: Graph,
    settings: Settings,
    summary: RunSummary | None,
    command: str,
) -> Path:
    """Write ``report.md`` and its PNGs into the graph's root; the report's path."""
    root = graph.root
    prepared = _model_record(graph, "prepare")
    vocab = prepared["vocab_size"] if prepared else settings.scale.vocab_size
    about = machine()
    lines = [
        f'# Reproducing "Teaching Tiny Minds": scale {settings.scale.name}',
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, tinyminds "
        f"{__version__}.",
        "",
        f"- scale: {settings.scale.description}",
        f"- corpus: {settings.corpus}"
        + (
            f" ({prepared['words']:,} training words, {prepared['tokens']:,} tokens, "
            f"{prepared['chunks']:,} chunks of {prepared['chunk_size']}; BPE of {vocab:,} tokens)"
            if prepared
            else ""
        ),
        "- training: "
        + (
            f"at most {settings.max_steps:,} optimizer steps per model (a bounded run: not the "
            "recipes' whole epochs)"
            if settings.max_steps
            else "each recipe's own budget (its max_steps, else its whole epochs; Table 1 gives the "
            "steps run)"
        ),
        "- evaluation: "
        + (
            f"{', '.join(settings.eval_tasks)} from {settings.eval_folder}"
            + (
                f", at most {settings.eval_max_items} pairs per subtask (a quick look: not "
                "comparable with the paper's numbers)"
                if settings.eval_max_items
                else ", every pair"
            )
            if settings.eval_folder
            else "none (no evaluation data)"
        ),
        "- machine: " + ", ".join(f"{key} {value}" for key, value in about.items()),
        "",
        "## Stages",
        "",
        "Each stage's output lives in `stages/NAME-KEY/` (KEY: hash of its config and of its "
        "inputs' keys); `ran` were run by this invocation, `reused` were finished before. Peak RSS "
        "is the stage's own peak resident memory on Linux; marked *, the process's peak so far "
        "when the stage ended (stages share one process; other systems, and stages finished by "
        "an older tinyminds).",
        "",
        *stage_table(graph, summary),
        "",
        "## Quality: did the models learn?",
        "",
        *quality_section(graph, settings),
        "",
        "## Exposure",
        "",
        *exposure_section(graph, settings),
        "",
        "## Table 1: configurations",
        "",
        f"True parameter counts at this run's vocabulary ({vocab:,} tokens; the generator adds "
        "[MASK]); the paper's names are kept.",
        "",
        *table_1(graph, settings, vocab),
        "",
        "## Table 2: distilled students (%)",
        "",
        *score_table(graph, settings, 2),
        "",
        "## Table 3: teachers and baselines (%)",
        "",
        "GPT2-44M is also the no-distillation baseline of DistilledGPT-44M (same architecture "
        "and data); Llama-58M is the Llama students' architecture trained alone with the students' "
        "hyperparameters (the paper publishes no number for it).",
        "",
        *score_table(graph, settings, 3),
        "",
        "## Table 4: GLUE (%)",
        "",
    ]
    glue = table_4(graph, settings)
    if glue is None:
        lines.append(
            "Not run (`--glue` fine-tunes LoRA classifiers for DistilledGPT-44M and "
            "BabyLlama-58M on every GLUE task: hours on a GPU; it needs glue_filtered/ in the "
            "evaluation data)."
        )
    else:
        lines += glue
    lines += ["", "## Wilcoxon tests", "", *wilcoxon_section(graph), ""]
    charts = learning_curves(graph, settings, root)
    chart = scores_chart(graph, settings, root)
    lines += ["## Charts", ""]
    for path in [*charts, *([chart] if chart else [])]:
        lines.append(f"![{path.stem}]({path.name})")
    if not charts and not chart:
        lines.append("None yet: no model finished.")
    projected = projection(graph, settings)
    lines += ["", "## Projected full run", ""]
    if projected is None:
        lines.append("No training stage was measured.")
    else:
        lines += projected[0]
    notes = {**(summary.skipped if summary else {})}
    if notes or (summary and summary.failed):
        lines += ["", "## Not run", ""]
        for name, why in (summary.failed if summary else {}).items():
            lines.append(f"- {name}: failed: {why}")
        for name, why in notes.items():
            lines.append(f"- {name}: {why}")
    path = root / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def projected_hours(graph: Graph, settings: Settings) -> float | None:
    """The projected full-run training time in hours (see `projection`), or None."""
    projected = projection(graph, settings)
    return None if projected is None else projected[1] / 3600
