"""Region features + box geometry -> token embeddings of the single-stream model."""

from __future__ import annotations

import math

import torch
from torch import nn

FOURIER_FREQUENCIES = (1, 2, 4, 8)  # cycles over the image side: resolves halves down to sixteenths


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """[.., 4] normalised (x1, y1, x2, y2) -> [.., 6] (x1, y1, x2, y2, w, h), as OSCAR/VinVL use."""
    wh = boxes[..., 2:4] - boxes[..., 0:2]
    return torch.cat([boxes, wh], dim=-1)


def fourier_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """[.., 4] boxes -> [.., 6 + 6 * 2F]: the geometry and its sines and cosines at F frequencies.

    A linear map of raw coordinates can only say "further right"; words such as "on the right" or
    "left of" are thresholds and comparisons, which sines and cosines at a few frequencies let a
    linear layer (and attention's dot products) express directly (Fourier features, Tancik et al. 2020)."""
    geometry = box_geometry(boxes)
    angles = torch.cat([geometry * (2 * math.pi * f) for f in FOURIER_FREQUENCIES], dim=-1)
    return torch.cat([geometry, torch.sin(angles), torch.cos(angles)], dim=-1)


# model.box_encoding -> (boxes -> geometry values, how many values per box)
BOX_ENCODINGS = {"linear": (box_geometry, 6), "fourier": (fourier_geometry, 6 * (1 + 2 * len(FOURIER_FREQUENCIES)))}


class VisualEmbedding(nn.Module):
    """Projects each region (feature vector and geometry) to the hidden size.

    A learned modality vector tells regions apart from word tokens; it works for
    encoders with a single token type (RoBERTa, XLM-R) as well as for BERT. box_encoding: linear
    (the 6 geometry values, as OSCAR/VinVL) | fourier (also their sines and cosines: `fourier_geometry`).
    """

    def __init__(
        self, feature_dim: int, hidden_size: int, dropout: float = 0.1, eps: float = 1e-12, box_encoding: str = "linear"
    ):
        super().__init__()
        if box_encoding not in BOX_ENCODINGS:
            raise ValueError(f"box_encoding must be one of {list(BOX_ENCODINGS)}, got {box_encoding!r}")
        self.feature_dim = feature_dim
        self.feature_proj = nn.Linear(feature_dim, hidden_size)
        self.geometry, width = BOX_ENCODINGS[box_encoding]
        self.box_proj = nn.Linear(width, hidden_size)
        self.modality = nn.Parameter(torch.zeros(hidden_size))
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"region features have width {features.shape[-1]}, the model expects {self.feature_dim} "
                "(model.feature_dim / the dataset's feature width)"
            )
        x = self.feature_proj(features) + self.box_proj(self.geometry(boxes)) + self.modality
        return self.dropout(self.norm(x))
