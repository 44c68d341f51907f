"""Figures written into a run folder (PNG, atomically).

matplotlib's object API with the Agg canvas, never pyplot: no global backend is switched
and no GUI is needed, so plotting is safe on a headless cluster node or inside a notebook.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

from retrerank.io import write_bytes_atomic


def plot_sweep(rows: Sequence[Mapping[str, float]], path: str | Path, speedups: Sequence[str],
               recalls: Sequence[str], x: str = "n",
               xlabel: str = "adapters dropped from the first n blocks") -> Path:
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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return write_bytes_atomic(path, buffer.getvalue())
