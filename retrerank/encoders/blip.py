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

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.encoders.towers import TowerBiEncoder, TowerCrossEncoder
from retrerank.types import Encoded


class BlipBiEncoder(TowerBiEncoder):
    def embed_lower(self, lower: Encoded, m: int, kind: str) -> torch.Tensor:
        """ITC embeddings, L2-normalised: texts run the text encoder (no cross-attention) from
        their embedding states; images pool their vision tower states."""
        self._check(m)
        if kind == "images":
            return F.normalize(self.backbone.image_embedding(lower), dim=-1)
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.backbone.text_states(lower)
        return F.normalize(self.backbone.text_embedding(hidden), dim=-1)


class BlipCrossEncoder(TowerCrossEncoder):
    def new_parameters(self) -> list[nn.Parameter]:
        return []  # the ITM head is pretrained

    def score_lower(self, text: Encoded, image: Encoded) -> torch.Tensor:
        """ITM scores logit(match) - logit(no match) [B] for aligned pairs (text i, image i)."""
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.backbone.text_states(text, image)
        logits = self.backbone.match_logits(hidden)
        return logits[:, 1] - logits[:, 0]
