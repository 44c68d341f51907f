"""The results table printed at the end of a run, saved as results.md and logged to W&B.

Its R@k columns are the k the metrics hold (eval.ks), not a fixed R@1/5/10.
"""

from __future__ import annotations

import re

from retrerank.retrieval.methods import KINDS, Method

DEFAULT_KS = (1, 5, 10)


def recall_ks(metrics: dict[str, float], stage: str = "test") -> list[int]:
    """The k of every R@k in `metrics` (ascending); R@1/5/10 when there is none."""
    found = {
        int(m.group(1))
        for key in metrics
        if key.startswith(f"{stage}/")
        for m in [re.search(r"/(?:i2t|t2i)_r(\d+)$", key)]
        if m
    }
    return sorted(found) or list(DEFAULT_KS)


def columns(metrics: dict[str, float], stage: str = "test") -> list[str]:
    """Metric columns of the table: R@k of each direction, rsum, mAP@R, ms per query."""
    ks = recall_ks(metrics, stage)
    return (
        ["method"]
        + [f"{d}_r{k}" for d in ("i2t", "t2i") for k in ks]
        + ["rsum", "i2t_map_at_r", "t2i_map_at_r", "i2t_ms_per_query", "t2i_ms_per_query"]
    )


def titles(names: list[str]) -> list[str]:
    """Column headers: the first R@k of a direction names it ("i2t R@1", then "R@5")."""
    out, seen = [], set()
    for name in names:
        m = re.fullmatch(r"(i2t|t2i)_r(\d+)", name)
        if m:
            out.append(f"{m.group(1)} R@{m.group(2)}" if m.group(1) not in seen else f"R@{m.group(2)}")
            seen.add(m.group(1))
        else:
            out.append(
                {
                    "i2t_map_at_r": "i2t mAP@R",
                    "t2i_map_at_r": "t2i mAP@R",
                    "i2t_ms_per_query": "i2t ms/q",
                    "t2i_ms_per_query": "t2i ms/q",
                }.get(name, name)
            )
    return out


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
    names = columns(metrics, stage)
    return [
        [method] + [metrics.get(f"{stage}/{method}/{c}", float("nan")) for c in names[1:]]
        for method in methods_in(metrics, stage)
    ]


def _cells(metrics: dict[str, float], stage: str) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows: percentages (R@k, rsum, mAP@R) to 0.1, timings to 0.01 ms."""
    names = columns(metrics, stage)
    rows = [
        [row[0]] + [f"{v:.2f}" if c.endswith("_ms_per_query") else f"{v:.1f}" for c, v in zip(names[1:], row[1:])]
        for row in table_rows(metrics, stage)
    ]
    return titles(names), rows


def format_table(metrics: dict[str, float], stage: str = "test") -> str:
    header, rows = _cells(metrics, stage)
    widths = [max([12] + [len(r[0]) + 2 for r in rows])] + [max(9, len(h) + 2) for h in header[1:]]
    lines = ["".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines)


def format_markdown(metrics: dict[str, float], stage: str = "test") -> str:
    """The same table in Markdown (the run folder's results.md)."""
    header, rows = _cells(metrics, stage)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


TWIN_COLUMNS = ("twin_text", "twin_image", "twin_group", "twin_group_colour", "twin_group_cell", "twin_group_size")


def twin_rows(metrics: dict[str, float], stage: str = "test") -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the twin table (Winoground-style scores, retrerank.retrieval.twins): one row
    per method with twin scores (bi, cross: the logit alone, rerank@k, cross_all), percentages to 0.1;
    "-" for a swap kind without pairs. ([], []) where the metrics have none."""
    with_twins = {key.split("/")[1] for key in metrics if key.startswith(f"{stage}/") and key.endswith("/twin_group")}
    methods = methods_in({f"{stage}/{m}/rsum": 0.0 for m in with_twins if m != "cross"}, stage)
    if "cross" in with_twins:  # the logit alone: beside the methods that rank by it
        methods.insert(1 if "bi" in with_twins else 0, "cross")
    if not methods:
        return [], []
    pairs = {kind: metrics.get(f"{stage}/twin_pairs_{kind}") for kind in ("colour", "cell", "size")}
    header = ["twins", "text", "image", "group"] + [
        f"{kind} ({int(n) if n is not None else 0})" for kind, n in pairs.items()
    ]
    rows = [
        [method]
        + [
            "-" if f"{stage}/{method}/{c}" not in metrics else f"{metrics[f'{stage}/{method}/{c}']:.1f}"
            for c in TWIN_COLUMNS
        ]
        for method in methods
    ]
    return header, rows


def format_twin_table(metrics: dict[str, float], stage: str = "test") -> str:
    """The twin table as text, under a line saying how many pairs it scores; "" without twin scores."""
    header, rows = twin_rows(metrics, stage)
    if not rows:
        return ""
    widths = [max([12] + [len(r[0]) + 2 for r in rows])] + [max(9, len(h) + 2) for h in header[1:]]
    n = int(metrics.get(f"{stage}/twin_pairs", 0))
    lines = [f"{n} twin pairs, Winoground scores (%): text, image, group; group by what the twin swapped (pairs)"]
    lines.append("".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    lines += ["".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines)


def format_twin_markdown(metrics: dict[str, float], stage: str = "test") -> str:
    """The twin table in Markdown (appended to results.md); "" without twin scores."""
    header, rows = twin_rows(metrics, stage)
    if not rows:
        return ""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
