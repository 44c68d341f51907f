"""The cross-encoder view of a backbone: text and image read together, a head scores the pair."""
from __future__ import annotations

import torch
from torch import nn

from retrerank.encoders.pooling import pool


class CrossEncoder(nn.Module):
    """Matching logit from the pooled pair states (higher = better match).

    Mean pooling is the default: sentence-embedding checkpoints such as all-MiniLM-L6-v2
    were trained with mean pooling, and their [CLS] state carries little.
    """

    def __init__(self, backbone: nn.Module, hidden: int = 0, dropout: float = 0.1, pooling: str = "mean",
                 adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.adapter_set = adapter_set  # the adapter set active while this view runs (None: none)
        size = backbone.hidden_size
        hidden = hidden or size
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def score(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.encode_pair(text, image)
        return self.head(pool(hidden, mask, self.pooling)).squeeze(-1)
