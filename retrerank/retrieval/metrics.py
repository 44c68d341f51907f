"""Recall@k, R-Precision and mAP@R for many-to-many retrieval, and the metric names used everywhere.

Names follow DESIGN.md: `{stage}/{method}/{direction}_r{k}`, `{stage}/{method}/{direction}_rprec`,
`{stage}/{method}/{direction}_map_at_r`, `{stage}/{method}/rsum` (the R@k entries only),
`{stage}/{method}/{direction}_ms_per_query`, with direction "i2t" or "t2i" and method
"bi", "rerank@{k}" or "cross_all".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch

DIRECTIONS = ("i2t", "t2i")
_RECALL_KEY = re.compile(r"^(?:(?:i2t|t2i)_)?r\d+$")


def recall_at_k(
    rankings: torch.Tensor | np.ndarray,
    relevant: Sequence[Sequence[int] | np.ndarray | int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Percentage (0-100) of queries with at least one relevant item among their first k.

    rankings: [Q, K] corpus indices per query, best first. relevant: for each query, the
    corpus indices that count as a hit (one int or any array-like of them).
    Returns {"r1": ..., "r5": ...} for `ks`.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of k >= 1, got {list(ks)}")
    rankings, relevant = _validate(rankings, relevant, "recall_at_k")
    if rankings.shape[1] < max(ks):
        raise ValueError(f"rankings have {rankings.shape[1]} columns, fewer than the largest k={max(ks)}")
    hits = relevant_hits(rankings[:, : max(ks)], relevant)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {f"r{k}": float(100.0 * np.mean(first_hit < k)) for k in ks}


def ranking_precision(
    rankings: torch.Tensor | np.ndarray,
    relevant: Sequence[Sequence[int] | np.ndarray | int],
) -> dict[str, float]:
    """R-Precision and mAP@R in percent (0-100), averaged over queries.

    For a query with R relevant items (distinct corpus indices), R-Precision is the share of
    relevant items among its first R, and mAP@R = (1/R) * sum_{i<=R} P@i * rel(i)
    (Musgrave et al. 2020; ECCV Caption). rankings: [Q, K] as for `recall_at_k`, with K at
    least the largest R. Returns {"rprec": ..., "map_at_r": ...}.
    """
    rankings, relevant = _validate(rankings, relevant, "ranking_precision")
    relevant = [np.unique(items) for items in relevant]
    r = np.array([items.size for items in relevant], dtype=np.int64)
    needed = int(r.max())
    if rankings.shape[1] < needed:
        query = int(r.argmax())
        raise ValueError(
            f"rankings have {rankings.shape[1]} columns but query {query} has {needed} relevant items: "
            f"R-Precision and mAP@R need rankings at least {needed} deep"
        )
    # Hits among each query's first R; later columns do not count.
    hits = relevant_hits(rankings[:, :needed], relevant) & (np.arange(needed)[None, :] < r[:, None])
    found = np.cumsum(hits, axis=1)
    rprec = found[:, -1] / r
    precision_at_i = found / np.arange(1, needed + 1)
    map_at_r = (precision_at_i * hits).sum(axis=1) / r
    return {"rprec": float(100.0 * rprec.mean()), "map_at_r": float(100.0 * map_at_r.mean())}


def _validate(rankings: torch.Tensor | np.ndarray, relevant: Sequence, who: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """rankings as a [Q, K] numpy array and relevant as Q non-empty int64 arrays, or ValueError."""
    if isinstance(rankings, torch.Tensor):
        rankings = rankings.detach().cpu().numpy()
    rankings = np.asarray(rankings)
    if rankings.ndim != 2:
        raise ValueError(f"rankings must be [queries, K], got shape {rankings.shape}")
    n_queries = rankings.shape[0]
    if n_queries == 0:
        raise ValueError(f"{who} got no queries")
    if len(relevant) != n_queries:
        raise ValueError(f"{n_queries} ranked queries but relevant items for {len(relevant)}")
    if rankings.size and rankings.min() < 0:
        raise ValueError("rankings contain negative corpus indices")
    relevant = [np.atleast_1d(np.asarray(items, dtype=np.int64)) for items in relevant]
    empty = [q for q, items in enumerate(relevant) if items.size == 0]
    if empty:
        raise ValueError(f"{len(empty)} queries have no relevant items (first: query {empty[0]})")
    return rankings, relevant


def relevant_hits(rankings: np.ndarray, relevant: list[np.ndarray]) -> np.ndarray:
    """[Q, K] bool: whether rankings[q, i] is relevant to query q (relevant: Q int64 arrays; metrics
    and hard-negative mining share this one membership test)."""
    # One vectorised membership test: key (query, corpus item) as query * width + item.
    width = int(max(rankings.max(initial=0), max((items.max() for items in relevant if items.size), default=0))) + 1
    query_ids = np.arange(len(relevant), dtype=np.int64)
    ranked_keys = query_ids[:, None] * width + rankings.astype(np.int64)
    relevant_keys = np.concatenate([q * width + items for q, items in zip(query_ids, relevant)])
    return np.isin(ranked_keys, relevant_keys)


def rsum(metrics: Mapping[str, float]) -> float:
    """Sum of the recall entries ("r1", "i2t_r5", "val/bi/t2i_r10", ...) of a metrics dict."""
    return float(sum(v for key, v in metrics.items() if _RECALL_KEY.match(key.rsplit("/", 1)[-1])))


def method_metrics(
    stage: str,
    method: str,
    recalls: Mapping[str, Mapping[str, float]],
    ms_per_query: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Name one method's results per the convention.

    recalls: per direction, the metrics of `recall_at_k` and optionally `ranking_precision`
    merged: {"i2t": {"r1": ..., "rprec": ..., "map_at_r": ...}, "t2i": {...}};
    ms_per_query: {"i2t": ..., "t2i": ...}. rsum adds every R@k of both directions (not
    rprec or map_at_r).
    """
    unknown = set(recalls) | set(ms_per_query or {})
    unknown -= set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown directions {sorted(unknown)}; expected {list(DIRECTIONS)}")
    prefix = f"{stage}/{method}"
    out = {
        f"{prefix}/{direction}_{key}": float(value)
        for direction, values in recalls.items()
        for key, value in values.items()
    }
    out[f"{prefix}/rsum"] = rsum(out)
    for direction, ms in (ms_per_query or {}).items():
        out[f"{prefix}/{direction}_ms_per_query"] = float(ms)
    return out


def metric_names(ks: Sequence[int]) -> list[str]:
    """The names after `{stage}/{method}/` that `RetrieveRerank.evaluate` gives every method for `ks`
    (what `eval.monitor` may name, checked when the config loads)."""
    per_direction = [f"r{k}" for k in ks] + ["rprec", "map_at_r", "ms_per_query"]
    return [f"{d}_{name}" for d in DIRECTIONS for name in per_direction] + ["rsum"]
