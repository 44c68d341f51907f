"""The twin-network view of a backbone: text and image embedded separately."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.encoders.pooling import pool


class BiEncoder(nn.Module):
    """Pooled, L2-normalised embeddings; cosine similarity is a dot product."""

    def __init__(self, backbone: nn.Module, pooling: str = "mean", adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.adapter_set = adapter_set  # the adapter set active while this view runs (None: none)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.encode_text(text)
        return F.normalize(pool(hidden, mask, self.pooling), dim=-1)

    def embed_images(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.encode_image(image)
        return F.normalize(pool(hidden, mask, self.pooling), dim=-1)
