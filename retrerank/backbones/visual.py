"""Region features + box geometry -> token embeddings of the single-stream model."""
from __future__ import annotations

import torch
from torch import nn


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """[.., 4] normalised (x1, y1, x2, y2) -> [.., 6] (x1, y1, x2, y2, w, h), as OSCAR/VinVL use."""
    wh = boxes[..., 2:4] - boxes[..., 0:2]
    return torch.cat([boxes, wh], dim=-1)


class VisualEmbedding(nn.Module):
    """Projects each region (feature vector and geometry) to the hidden size.

    A learned modality vector tells regions apart from word tokens; it works for
    encoders with a single token type (RoBERTa, XLM-R) as well as for BERT.
    """

    def __init__(self, feature_dim: int, hidden_size: int, dropout: float = 0.1, eps: float = 1e-12):
        super().__init__()
        self.feature_dim = feature_dim
        self.feature_proj = nn.Linear(feature_dim, hidden_size)
        self.box_proj = nn.Linear(6, hidden_size)
        self.modality = nn.Parameter(torch.zeros(hidden_size))
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"region features have width {features.shape[-1]}, the model expects {self.feature_dim} "
                "(model.feature_dim / the dataset's feature width)"
            )
        x = self.feature_proj(features) + self.box_proj(box_geometry(boxes)) + self.modality
        return self.dropout(self.norm(x))
