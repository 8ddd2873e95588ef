"""SVG charts of benchmark figures beside their tables (matplotlib, from the `bench` extra).

A chart is a row of panels; a panel groups bars by category, one bar per series, with the goals
drawn as dashed lines. The SVG is written without a date and with fixed ids, so a figure that
did not change leaves the file unchanged.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Panel:
    title: str
    unit: str                                   # the y axis label
    categories: list[str]                       # groups along the x axis
    series: dict[str, list[float]]              # legend label -> one value per category
    goals: dict[str, float] = field(default_factory=dict)  # label -> a horizontal dashed line
    log: bool = False                           # a log y axis, for figures of different orders


def write(path: Path, title: str, panels: list[Panel]) -> Path:
    """Draw `panels` side by side into the SVG file `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    matplotlib.rcParams["svg.hashsalt"] = "dsd-bench"
    figure, axes = pyplot.subplots(1, len(panels), figsize=(5.5 * len(panels), 5.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        width = 0.8 / len(panel.series)
        for i, (label, values) in enumerate(panel.series.items()):
            offsets = [c + (i - (len(panel.series) - 1) / 2) * width for c in range(len(panel.categories))]
            bars = ax.bar(offsets, values, width, label=label)
            ax.bar_label(bars, [f"{v:,.0f}" if v >= 100 else f"{v:.2f}" for v in values], fontsize=7)
        for (label, value), style in zip(panel.goals.items(), ("--", ":", "-.")):
            ax.axhline(value, color="black", linestyle=style, linewidth=0.8, label=label)
        ax.set_xticks(range(len(panel.categories)), [textwrap.fill(c, 20) for c in panel.categories], fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.unit)
        if panel.log:
            ax.set_yscale("log")
            lowest = min(v for values in panel.series.values() for v in values)
            ax.set_ylim(bottom=10 ** math.floor(math.log10(lowest)))
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    pyplot.close(figure)
    return path
