"""The twin-network view of a dual encoder: each tower and its projection, as pretrained.

Its "lower states" are the towers' final token states: a fusion cross-encoder on the same
backbone reads exactly those, so retrieval computes them once for both (see
`shares_lower_layers` and the pipeline's late-interaction path).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Encoded = tuple[torch.Tensor, torch.Tensor]


class DualBiEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter_set = adapter_set

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return self.backbone.collate_images(images)

    def _check(self, m: int) -> None:
        if m != self.backbone.num_layers:
            raise ValueError(f"a dual encoder's towers are only split at their top ({self.backbone.num_layers}), "
                             f"not at block {m}")

    def texts_lower(self, text: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        with self.backbone.adapter_switch.use(self.adapter_set):
            return self.backbone.text_states(text)

    def images_lower(self, image: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        with self.backbone.adapter_switch.use(self.adapter_set):
            return self.backbone.image_states(image)

    def embed_lower(self, lower: Encoded, m: int, kind: str) -> torch.Tensor:
        """Embeddings from tower states: the model's pooling and projection, L2-normalised."""
        self._check(m)
        pool = self.backbone.text_embedding if kind == "texts" else self.backbone.image_embedding
        return F.normalize(pool(lower), dim=-1)

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.texts_lower(text, top), top, "texts")

    def embed_images(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.images_lower(image, top), top, "images")

    def shares_lower_layers(self, cross: nn.Module) -> bool:
        """The fusion cross-encoder reads the same tower states when it runs the same adapters
        (or none: all dropped)."""
        switch = self.backbone.adapter_switch
        return (getattr(cross, "backbone", None) is self.backbone
                and (cross.adapter_set == self.adapter_set or switch.drop >= self.backbone.num_layers))
