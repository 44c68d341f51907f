"""The cross-encoder view of a backbone: text and image read together, a head scores the pair."""
from __future__ import annotations

import torch
from torch import nn


class CrossEncoder(nn.Module):
    """Matching logit from the pair's [CLS] state (higher = better match)."""

    def __init__(self, backbone: nn.Module, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        size = backbone.hidden_size
        hidden = hidden or size
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def score(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden, _ = self.backbone.encode_pair(text, image)
        return self.head(hidden[:, 0]).squeeze(-1)
