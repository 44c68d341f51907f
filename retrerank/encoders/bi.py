"""The twin-network view of a backbone: text and image embedded separately."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.encoders.pooling import pool
from retrerank.types import Encoded


class BiEncoder(nn.Module):
    """Pooled, L2-normalised embeddings; cosine similarity is a dot product.

    `*_lower(batch, m)` + `embed_lower(states, m)` split the same computation at block m, so
    that retrieval can keep the layer-m states for a late-interaction cross-encoder.
    """

    def __init__(self, backbone: nn.Module, pooling: str = "mean", adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.adapter_set = adapter_set  # the adapter set active while this view runs (None: none)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return self.backbone.collate_images(images)

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_lower(self.texts_lower(text, 0), 0, "texts")

    def embed_images(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_lower(self.images_lower(image, 0), 0, "images")

    def texts_lower(self, text: dict[str, torch.Tensor], m: int) -> Encoded:
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.embed_text(text)
            return self.backbone.run_layers(hidden, mask, 0, m), mask

    def images_lower(self, image: dict[str, torch.Tensor], m: int) -> Encoded:
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.embed_image(image)
            return self.backbone.run_layers(hidden, mask, 0, m), mask

    def embed_lower(self, lower: Encoded, m: int, kind: str = "texts") -> torch.Tensor:
        """Embeddings from layer-m states of texts or images (`kind`; one stream here, so the same
        for both): blocks [m, L), pooling, L2 normalisation."""
        hidden, mask = lower
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.backbone.run_layers(hidden, mask, m)
        return F.normalize(pool(hidden, mask, self.pooling), dim=-1)

    def shares_lower_layers(self, cross: nn.Module) -> bool:
        """Whether blocks [0, m) of `cross` compute exactly what this encoder's do (same backbone,
        and the same adapters below m, or none there), so one run serves both."""
        m = getattr(cross, "join_layer", 0)
        switch = self.backbone.adapter_switch
        return getattr(cross, "backbone", None) is self.backbone and (
            cross.adapter_set == self.adapter_set or switch.drop >= m
        )
