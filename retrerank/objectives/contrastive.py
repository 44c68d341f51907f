"""Symmetric InfoNCE over in-batch negatives with a learnable temperature.

Input contract: `text` [B, E] and `image` [B, E], L2-normalised, row i of each a
positive pair; `image_index` [B] identifies each row's image. Two captions of the
same image are never negatives of each other: those off-diagonal cells are masked.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: keeps a learnable temperature from collapsing


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.07, learnable: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale.item()

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, text: torch.Tensor, image: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        logits = self.scale * text @ image.T
        duplicate = image_index[:, None] == image_index[None, :]
        duplicate.fill_diagonal_(False)
        logits = logits.masked_fill(duplicate, float("-inf"))
        target = torch.arange(len(text), device=text.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
