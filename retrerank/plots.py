"""Figures written into a run folder (PNG, atomically).

matplotlib's object API with the Agg canvas, never pyplot: no global backend is switched
and no GUI is needed, so plotting is safe on a headless cluster node or inside a notebook.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from retrerank.io import write_bytes_atomic


def plot_sweep(
    rows: Sequence[Mapping[str, float]],
    path: str | Path,
    speedups: Sequence[str],
    recalls: Sequence[str],
    x: str = "n",
    xlabel: str = "adapters dropped from the first n blocks",
) -> Path:
    """Two panels against column `x` (default n, the number of adapter-free lower blocks):
    the speed-up columns `speedups` (1 = as fast as the first row) and the rsum columns `recalls`."""
    # imported here: plotting is rare, and matplotlib would cost every run its import time
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ns = [row[x] for row in rows]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    speed, recall = figure.subplots(1, 2)
    for column in speedups:
        speed.plot(ns, [row[column] for row in rows], marker="o", label=column.removesuffix("_speedup"))
    speed.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    speed.set(xlabel=xlabel, ylabel=f"speed-up vs {x}={ns[0]}", title="speed")
    for column in recalls:
        recall.plot(ns, [row[column] for row in rows], marker="o", label=column.removesuffix("_rsum"))
    recall.set(xlabel=xlabel, ylabel="rsum (test)", title="recall")
    for axes in (speed, recall):
        axes.set_xticks(ns)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    return save_png(figure, path)


def read_curves(csv_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged series of a Lightning CSV log as (step, value) points, by metric name. The log
    has one row per logging call, with the cells of metrics not logged by that call empty."""
    import csv

    series: dict[str, list[tuple[int, float]]] = {}
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for key, cell in row.items():
                if key not in ("step", "epoch") and cell not in ("", None):
                    series.setdefault(key, []).append((step, float(cell)))
    return series


def plot_curves(csv_path: str | Path, path: str | Path) -> Path | None:
    """The training losses (left) and the validation rsum of each method (right) against the
    step, from a run's CSV log; None when the log has no training loss yet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = read_curves(csv_path)
    losses = sorted(k for k in series if k.startswith("train/loss"))
    validation = sorted(k for k in series if k.startswith("val/") and (k.endswith("/rsum") or k.startswith("val/loss")))
    if not losses:
        return None
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    train, val = figure.subplots(1, 2)
    for key in losses:
        steps, values = zip(*series[key])
        train.plot(steps, values, label=key.removeprefix("train/"))
    train.set(xlabel="step", ylabel="loss", title="training losses")
    rsums = [k for k in validation if k.endswith("/rsum")]
    for key in rsums:  # markers: a short run may validate only once
        steps, values = zip(*series[key])
        val.plot(steps, values, marker="o", label=key.removeprefix("val/").removesuffix("/rsum"))
    val.set(xlabel="step", ylabel="rsum (validation)", title="validation")
    for axes in (train, val):
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    return save_png(figure, path)


def save_png(figure, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as a PNG at `path`, written atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_bytes_atomic(path, buffer.getvalue())
