"""PNG charts of benchmark results, one style for all bench/ scripts (their `--plot PATH` option).

Not a benchmark itself (`make bench` skips it). matplotlib is imported only when a chart is written, with the
Agg backend, so the scripts run on headless machines and without matplotlib when no chart is asked for.
Every chart carries a footer with the machine's cores and load average: the figures are from one run on a
shared machine, and only the ratios within a run mean much.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "#9aa0a6"  # the thing compared against: direct engine, naive code, FIFO, sequential
VLMSERVE = "#1a73e8"
EXTRA = "#f29900"
PALETTE = (BASELINE, VLMSERVE, EXTRA, "#34a853", "#a142f4")


@dataclass
class Panel:
    """One small bar chart: a metric for a few contenders (first bar is the baseline unless colors say else)."""

    title: str
    labels: Sequence[str]
    values: Sequence[float]
    unit: str = ""
    fmt: str = "{:.3g}"
    colors: Sequence[str] = field(default_factory=tuple)
    lower_is_better: bool = False


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
        "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3, "axes.axisbelow": True,
    })  # fmt: skip
    return plt


def machine_note() -> str:
    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; one run on a shared machine"


def finish_figure(fig: Any, plt: Any, path: str | Path, title: str, note: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    footer = f"{note}  ·  {machine_note()}" if note else machine_note()
    fig.text(0.01, 0.01, footer, fontsize=7.5, color="#5f6368", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    print(f"chart written to {target}")
    return target


def save_panels(path: str | Path, title: str, panels: Sequence[Panel], note: str = "") -> Path:
    """Side-by-side bar charts, one per metric (metrics of different units never share an axis)."""
    plt = pyplot()
    width = sum(max(3.2, 0.9 * len(panel.values) + 0.8) for panel in panels) + 0.6
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        colors = list(panel.colors) or [PALETTE[i % len(PALETTE)] for i in range(len(panel.values))]
        bars = ax.bar(range(len(panel.values)), panel.values, color=colors, width=0.6)
        ax.set_xticks(range(len(panel.labels)), list(panel.labels), fontsize=8)
        hint = " (lower is better)" if panel.lower_is_better else ""
        ax.set_title(f"{panel.title}{hint}")
        if panel.unit:
            ax.set_ylabel(panel.unit)
        ax.bar_label(bars, labels=[panel.fmt.format(v) for v in panel.values], padding=2, fontsize=8)
        ax.set_ylim(0, max([*panel.values, 1e-9]) * 1.18)
    return finish_figure(fig, plt, path, title, note)


def save_grouped(
    path: str | Path,
    title: str,
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    ylabel: str,
    note: str = "",
    fmt: str = "{:.0f}",
) -> Path:
    """Grouped bars: each category (an input) with one bar per series (a contender)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(categories) + 2), 3.8))
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        offsets = [c + (index - (len(series) - 1) / 2) * width for c in range(len(categories))]
        bars = ax.bar(offsets, values, width, label=name, color=PALETTE[index % len(PALETTE)])
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=7)
    ax.set_xticks(range(len(categories)), list(categories), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)
    return finish_figure(fig, plt, path, title, note)
