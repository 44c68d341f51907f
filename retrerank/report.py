"""The results table printed at the end of a run and logged to W&B."""
from __future__ import annotations

from retrerank.retrieval.methods import KINDS, Method

COLUMNS = ["method", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
           "i2t_map_at_r", "t2i_map_at_r", "i2t_ms_per_query", "t2i_ms_per_query"]


def methods_in(metrics: dict[str, float], stage: str) -> list[str]:
    """Methods in a stable order: bi, rerank@k by k, cross_all, then anything else."""
    found = {key.split("/")[1] for key in metrics if key.startswith(f"{stage}/") and key.endswith("/rsum")}

    def order(m: str) -> tuple:
        try:
            return (*Method.parse(m).sort_key(), "")
        except ValueError:  # e.g. a pruned fusion's "pruned1:bi": after the methods
            return len(KINDS), 0, m
    return sorted(found, key=order)


def table_rows(metrics: dict[str, float], stage: str = "test") -> list[list]:
    rows = []
    for method in methods_in(metrics, stage):
        rows.append([method] + [metrics.get(f"{stage}/{method}/{c}", float("nan")) for c in COLUMNS[1:]])
    return rows


def format_table(metrics: dict[str, float], stage: str = "test") -> str:
    rows = table_rows(metrics, stage)
    header = ["method", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum", "i2t mAP@R", "t2i mAP@R",
              "i2t ms/q", "t2i ms/q"]
    widths = [max([12] + [len(r[0]) + 2 for r in rows])] + [9] * 7 + [11, 11, 10, 10]
    lines = ["".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        # percentages (R@k, rsum, mAP@R) to 0.1, timings to 0.01 ms
        cells = [row[0].ljust(widths[0])] + [(f"{v:.2f}" if c.endswith("_ms_per_query") else f"{v:.1f}").rjust(w)
                                             for c, v, w in zip(COLUMNS[1:], row[1:], widths[1:])]
        lines.append("".join(cells))
    return "\n".join(lines)
