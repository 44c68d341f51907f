"""The cross-encoder's scoring head: joint pair states -> one matching logit."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.encoders.pooling import pool

CROSS_HEADS = ("halves", "pair")


def score_head(size: int, hidden: int = 0, dropout: float = 0.1) -> nn.Sequential:
    """dropout -> Linear(size, hidden) -> tanh -> dropout -> Linear(hidden, 1); hidden 0: size."""
    hidden = hidden or size
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))


def head_input_size(kind: str, size: int) -> int:
    if kind not in CROSS_HEADS:
        raise ValueError(f"model.cross_head={kind!r}; choose from {list(CROSS_HEADS)}")
    return 4 * size if kind == "halves" else size


def pair_features(kind: str, hidden: torch.Tensor, mask: torch.Tensor, text_len: int, pooling: str) -> torch.Tensor:
    """What the head reads from the joint output [B, T + I, H] of a pair whose first `text_len`
    positions are the text.

    pair: one vector pooled over the whole pair. halves: [u, v, u * v, |u - v|], u the text half
    pooled by `pooling`, v the mean of the image half, both L2-normalised. One mean over the pair
    blends words and regions; the halves keep what the caption says and what the image shows
    apart, so the head reads their agreement directly (as sentence-pair classifiers such as
    InferSent and SBERT do), while every layer below still attends across the pair.
    """
    if kind == "pair":
        return pool(hidden, mask, pooling)
    u = F.normalize(pool(hidden[:, :text_len], mask[:, :text_len], pooling), dim=-1)
    v = F.normalize(pool(hidden[:, text_len:], mask[:, text_len:], "mean"), dim=-1)
    return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)
