"""Type aliases shared across the package (one definition each)."""

from __future__ import annotations

import torch

# a transformer's output: hidden states [B, T, H] and mask [B, T] (True = real token)
Encoded = tuple[torch.Tensor, torch.Tensor]
# a text or image batch: token ids + mask, region features + boxes + mask, or pixels
Inputs = dict[str, torch.Tensor]
# a block of cross-encoder pairs: (text inputs, their rows, image inputs, their rows); pair i is
# (texts row text_rows[i], images row image_rows[i])
PairBlock = tuple[Inputs, torch.Tensor, Inputs, torch.Tensor]
