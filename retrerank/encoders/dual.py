"""The twin-network view of a dual encoder (CLIP, SigLIP): each tower and its projection, as
pretrained, pooled from the towers' final token states (the states a fusion cross-encoder on
the same backbone reads: retrerank.encoders.towers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrerank.encoders.towers import TowerBiEncoder
from retrerank.types import Encoded


class DualBiEncoder(TowerBiEncoder):
    def embed_lower(self, lower: Encoded, m: int, kind: str) -> torch.Tensor:
        """Embeddings from tower states: the model's pooling and projection, L2-normalised."""
        self._check(m)
        pool = self.backbone.text_embedding if kind == "texts" else self.backbone.image_embedding
        return F.normalize(pool(lower), dim=-1)
