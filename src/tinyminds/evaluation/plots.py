"""``comparison.png``: a grouped bar chart of task scores (matplotlib, Agg canvas, no display).

One group of bars per task, one bar per compared model, then hatched bars for the paper's published
numbers of the matched models; a dashed line at 50%, chance on the two-way minimal-pair tasks.
"""

from __future__ import annotations

from pathlib import Path

from tinyminds.evaluation.tasks import TASKS

LABELS = {**{name: fmt.label for name, fmt in TASKS.items()}, "glue": "GLUE"}


def task_score_chart(
    bars: list[tuple[str, dict[str, float | None]]],
    tasks: list[str],
    path: Path,
    published_from: int | None = None,
) -> Path:
    """Write the chart of ``bars`` (label, task -> score in percent) over ``tasks`` to ``path``.

    Bars from index ``published_from`` on (published numbers) are drawn hatched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if published_from is None:
        published_from = len(bars)
    figure = Figure(figsize=(max(6.0, 1.2 + 0.45 * len(bars) * len(tasks)), 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(bars), 1)
    colours = [f"C{i % 10}" for i in range(len(bars))]
    for i, (label, scores) in enumerate(bars):
        xs = [t + (i - (len(bars) - 1) / 2) * width for t in range(len(tasks))]
        heights = [scores.get(task) for task in tasks]
        shown = [(x, h) for x, h in zip(xs, heights, strict=True) if h is not None]
        if not shown:
            continue
        published = i >= published_from
        rects = axes.bar(
            [x for x, _ in shown],
            [h for _, h in shown],
            width=width * 0.95,
            label=label,
            color="white" if published else colours[i],
            edgecolor=colours[i],
            hatch="//" if published else None,
        )
        axes.bar_label(rects, fmt="%.1f", fontsize=7, padding=1)
    axes.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xticks(range(len(tasks)), [LABELS.get(task, task) for task in tasks])
    axes.set_ylabel("score (%)")
    lowest = min((h for _, scores in bars for h in scores.values() if h is not None), default=0)
    axes.set_ylim(min(0.0, lowest - 5), 100)
    axes.set_title("Task scores (dashed: chance on minimal pairs)", fontsize=10)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
