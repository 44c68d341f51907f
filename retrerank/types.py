"""Type aliases shared across the package (one definition each)."""
from __future__ import annotations

import torch

# a transformer's output: hidden states [B, T, H] and mask [B, T] (True = real token)
Encoded = tuple[torch.Tensor, torch.Tensor]
# a text or image batch: token ids + mask, region features + boxes + mask, or pixels
Inputs = dict[str, torch.Tensor]
