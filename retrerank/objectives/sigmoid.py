"""SigLIP's pairwise sigmoid loss (Zhai et al., 2023) as the bi-encoder objective.

The input contract and what counts as a negative are on `SigmoidPairs`, in the structure every
loss in retrerank.objectives uses (Inputs, positives and negatives, published loss, returns).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.distributed import gather_batch, gather_extra
from retrerank.objectives.relevance import true_of


class SigmoidPairs(nn.Module):
    """Every (caption, image) cell of the batch is its own binary decision, match or not.

    Inputs: as InfoNCE (retrerank.objectives.contrastive): text [B, E] and image [B, E]
        L2-normalised with row i a positive pair, image_index [B], optional exact relevance
        relevant [B, W], optional mined extras neg_image [N, E] / neg_image_index [N] and
        neg_text [M, E] / neg_text_index [M], and rank, world_size passed in.
    Positives and negatives: a cell is positive (z = +1) where the image is the caption's own
        (also a second copy of it in the batch, or, with exact relevance, any image the caption
        is true of: retrerank.objectives.relevance) and negative (z = -1) elsewhere. A caption's
        mined images and an image's mined captions add cells with z = -1 (+1 should one be of the
        row's own image).
    Published loss: SigLIP's -log sigmoid(z (t cos + b)) with a learnable scale t (stored as
        log t, initialised to 1 / objective.temperature) and bias b (objective.sigmoid_bias),
        summed over the cells and divided by the number of caption rows. No softmax ties a row's
        cells together, so the batch needs no normalisation over it. Under data parallelism
        (world_size > 1) each rank scores its own captions against every rank's images
        (all-gathered with gradient), and its mined extras likewise; the mean of the ranks' losses
        is the single-process loss over the global batch, so DDP's averaged gradients are its
        gradients.
    Returns: a scalar, the summed cell losses of this rank's captions divided by their number.
    """

    def __init__(self, temperature: float = 0.1, bias: float = -10.0, learnable: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"objective.temperature must be > 0, got {temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.tensor(float(bias)), requires_grad=learnable)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale.item()

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        image_index: torch.Tensor,
        neg_image: torch.Tensor | None = None,
        neg_image_index: torch.Tensor | None = None,
        neg_text: torch.Tensor | None = None,
        neg_text_index: torch.Tensor | None = None,
        relevant: torch.Tensor | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> torch.Tensor:
        _, all_image, all_index, _, _ = gather_batch(text, image, image_index, None, rank, world_size)
        loss = self._cells(text, all_image, true_of(relevant, image_index, all_index))
        if neg_image is not None:
            all_extra, extra_index = gather_extra(neg_image, neg_image_index, rank, world_size)
            loss = loss + self._cells(text, all_extra, true_of(relevant, image_index, extra_index))
        if neg_text is not None:  # a mined caption matches only a row of its own image (mining skips true matches)
            all_extra, extra_index = gather_extra(neg_text, neg_text_index, rank, world_size)
            loss = loss + self._cells(image, all_extra, image_index[:, None] == extra_index[None, :])
        return loss / len(text)

    def _cells(self, rows: torch.Tensor, columns: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """Summed loss of every (row, column) cell; `match` [rows, columns] marks the true matches."""
        logits = self.scale * rows @ columns.T + self.bias
        sign = match.to(logits.dtype) * 2 - 1
        return -F.logsigmoid(sign * logits).sum()
