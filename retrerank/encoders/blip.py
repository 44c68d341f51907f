"""BLIP's two retrieval heads as the framework's bi- and cross-encoder, on one shared model.

- `BlipBiEncoder`: ITC. Text encoder alone and vision tower, [CLS] states projected and
  L2-normalised: BLIP's own contrastive embeddings.
- `BlipCrossEncoder`: ITM. The text encoder cross-attending to the vision tower's final states;
  the score of a pair is logit(match) - logit(no match) of the ITM head, so sigmoid(score) is
  BLIP's softmax match probability and the framework's binary matching loss is BLIP's 2-class
  cross-entropy.

Both are late interaction at one fixed split: images after the vision tower, texts after the
text encoder's embedding layer. The bi-encoder's "lower states" are those same states (its text
embedding runs the text encoder from them), so retrieval computes each item once for both
(`shares_lower_layers`) and reranking runs only the cross-attending text encoder per pair.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

Encoded = tuple[torch.Tensor, torch.Tensor]


class _BlipRole(nn.Module):
    def __init__(self, backbone: nn.Module, adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter_set = adapter_set

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return self.backbone.collate_images(images)

    def _lower_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        return self.backbone.text_embedding_states(text)  # no adapters below the text encoder's blocks

    def _lower_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        with self.backbone.adapter_switch.use(self.adapter_set):
            return self.backbone.image_states(image)


class BlipBiEncoder(_BlipRole):
    def _check(self, m: int) -> None:
        if m != self.backbone.num_layers:
            raise ValueError(f"BLIP's encoders are only split at their fixed join ({self.backbone.num_layers}), "
                             f"not at block {m}")

    def texts_lower(self, text: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        return self._lower_text(text)

    def images_lower(self, image: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        return self._lower_image(image)

    def embed_lower(self, lower: Encoded, m: int, kind: str) -> torch.Tensor:
        """ITC embeddings, L2-normalised: texts run the text encoder (no cross-attention) from
        their embedding states; images pool their vision tower states."""
        self._check(m)
        if kind == "images":
            return F.normalize(self.backbone.image_embedding(lower), dim=-1)
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.backbone.text_states(lower)
        return F.normalize(self.backbone.text_embedding(hidden), dim=-1)

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.texts_lower(text, top), top, "texts")

    def embed_images(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.images_lower(image, top), top, "images")

    def shares_lower_layers(self, cross: nn.Module) -> bool:
        """Text embedding states never carry adapters; the vision tower states are the ITM
        cross-encoder's when it runs the same adapters (or none: all dropped)."""
        switch = self.backbone.adapter_switch
        return (getattr(cross, "backbone", None) is self.backbone
                and (cross.adapter_set == self.adapter_set or switch.drop >= self.backbone.num_layers))


class BlipCrossEncoder(_BlipRole):
    late = True  # the pipeline serves it from cached states
    robust_join = False

    def __init__(self, backbone: nn.Module, adapter_set: str | None = None):
        super().__init__(backbone, adapter_set)
        self.join_layer = self.eval_join = backbone.num_layers  # fixed: see the module docstring

    @contextmanager
    def joining_at(self, m: int) -> Iterator["BlipCrossEncoder"]:
        if m != self.join_layer:
            raise ValueError(f"BLIP's ITM cross-encoder joins at a fixed point (after the vision tower, "
                             f"layer {self.join_layer}); it cannot join at {m}")
        yield self

    def new_parameters(self) -> list[nn.Parameter]:
        return []  # the ITM head is pretrained

    def lower_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        return self._lower_text(text)

    def lower_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        return self._lower_image(image)

    def score_lower(self, text: Encoded, image: Encoded) -> torch.Tensor:
        """ITM scores logit(match) - logit(no match) [B] for aligned pairs (text i, image i)."""
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.backbone.text_states(text, image)
        logits = self.backbone.match_logits(hidden)
        return logits[:, 1] - logits[:, 0]

    def score(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_lower(self.lower_text(text), self.lower_image(image))
