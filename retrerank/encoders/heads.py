"""The cross-encoder's scoring head: pooled pair state -> one matching logit."""
from __future__ import annotations

from torch import nn


def score_head(size: int, hidden: int = 0, dropout: float = 0.1) -> nn.Sequential:
    """dropout -> Linear(size, hidden) -> tanh -> dropout -> Linear(hidden, 1); hidden 0: size."""
    hidden = hidden or size
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))
