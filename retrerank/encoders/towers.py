"""The bi- and cross-encoder views of a two-tower backbone (CLIP, SigLIP, BLIP), whose
cross-encoder joins the towers at one fixed point.

Their "lower states" are each item's states at that join (`backbone.text_lower`,
`backbone.image_states`): the cross-encoder reads them, and the bi-encoder pools its embeddings
from the same states, so retrieval computes each item once for both (`shares_lower_layers`)
and reranking runs only what comes after the join (the pipeline's late-interaction path).
Subclasses say how embeddings are pooled (`embed_lower`) and pairs scored (`score_lower`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from retrerank.types import Encoded


class TowerRole(nn.Module):
    def __init__(self, backbone: nn.Module, adapter_set: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter_set = adapter_set  # the adapter set active while this view runs (None: none)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return self.backbone.collate_images(images)

    def lower_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        with self.backbone.adapter_switch.use(self.adapter_set):
            return self.backbone.text_lower(text)

    def lower_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        with self.backbone.adapter_switch.use(self.adapter_set):
            return self.backbone.image_states(image)


class TowerBiEncoder(TowerRole):
    def _check(self, m: int) -> None:
        if m != self.backbone.num_layers:
            raise ValueError(
                f"a {self.backbone.kind} model's encoders are only split at their fixed join "
                f"({self.backbone.num_layers}), not at block {m}"
            )

    def texts_lower(self, text: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        return self.lower_text(text)

    def images_lower(self, image: dict[str, torch.Tensor], m: int) -> Encoded:
        self._check(m)
        return self.lower_image(image)

    def embed_lower(self, lower: Encoded, m: int, kind: str) -> torch.Tensor:
        raise NotImplementedError

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.texts_lower(text, top), top, "texts")

    def embed_images(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.backbone.num_layers
        return self.embed_lower(self.images_lower(image, top), top, "images")

    def shares_lower_layers(self, cross: nn.Module) -> bool:
        """The cross-encoder reads the same states when it runs the same adapters (or none: all dropped)."""
        switch = self.backbone.adapter_switch
        return getattr(cross, "backbone", None) is self.backbone and (
            cross.adapter_set == self.adapter_set or switch.drop >= self.backbone.num_layers
        )


class TowerCrossEncoder(TowerRole):
    late = True  # the pipeline serves it from cached states
    robust_join = False

    def __init__(self, backbone: nn.Module, adapter_set: str | None = None):
        super().__init__(backbone, adapter_set)
        self.join_layer = self.eval_join = backbone.num_layers  # fixed: after the towers

    def draw_join_layer(self, training: bool) -> int:
        """The fixed join layer (no robust drawing): the same in training and evaluation."""
        return self.join_layer

    @contextmanager
    def joining_at(self, m: int) -> Iterator[TowerCrossEncoder]:
        if m != self.join_layer:
            raise ValueError(
                f"a {self.backbone.kind} cross-encoder joins at a fixed point (after the towers, "
                f"layer {self.join_layer}); it cannot join at {m}"
            )
        yield self

    def score_lower(self, text: Encoded, image: Encoded) -> torch.Tensor:
        raise NotImplementedError

    def score(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score_lower(self.lower_text(text), self.lower_image(image))
