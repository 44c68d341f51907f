"""The results table printed at the end of a run and logged to W&B."""
from __future__ import annotations

import re

COLUMNS = ["method", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
           "i2t_ms_per_query", "t2i_ms_per_query"]


def methods_in(metrics: dict[str, float], stage: str) -> list[str]:
    """Methods in a stable order: bi, rerank@k by k, cross_all, then anything else."""
    found = {key.split("/")[1] for key in metrics if key.startswith(f"{stage}/") and key.endswith("/rsum")}
    def order(m: str):
        match = re.fullmatch(r"rerank@(\d+)", m)
        return (0, 0) if m == "bi" else (1, int(match.group(1))) if match else (2, 0) if m == "cross_all" else (3, m)
    return sorted(found, key=order)


def table_rows(metrics: dict[str, float], stage: str = "test") -> list[list]:
    rows = []
    for method in methods_in(metrics, stage):
        rows.append([method] + [metrics.get(f"{stage}/{method}/{c}", float("nan")) for c in COLUMNS[1:]])
    return rows


def format_table(metrics: dict[str, float], stage: str = "test") -> str:
    rows = table_rows(metrics, stage)
    header = ["method", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "i2t ms/q", "t2i ms/q"]
    widths = [max([12] + [len(r[0]) + 2 for r in rows])] + [9] * 7 + [10, 10]
    lines = ["".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [f"{v:.1f}".rjust(w) if i < 7 else f"{v:.2f}".rjust(w)
                                             for i, (v, w) in enumerate(zip(row[1:], widths[1:]))]
        lines.append("".join(cells))
    return "\n".join(lines)
