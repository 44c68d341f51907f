"""Pooling of token states into one vector per sequence."""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """`mean` over real tokens (mask True) or the first (`cls`) token."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown pooling {how!r}; use 'mean' or 'cls'")
