"""The bi-encoder's contrastive loss: symmetric InfoNCE over in-batch negatives, learnable temperature.

The input contract and what counts as a negative are on `InfoNCE`, in the structure every loss in
retrerank.objectives uses (Inputs, positives and negatives, published loss, returns).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.distributed import gather_batch, gather_extra
from retrerank.objectives.relevance import true_of

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: keeps a learnable temperature from collapsing


class InfoNCE(nn.Module):
    """Symmetric InfoNCE: each caption picks its image among the batch's images, and each image its caption.

    Inputs:
        text [B, E], image [B, E]: L2-normalised embeddings; row i of each is a positive pair.
        image_index [B]: each row's image (its row in the split).
        relevant [B, W] (optional): exact relevance, the image rows each caption is true of
            (retrerank.objectives.relevance), padded with -1.
        neg_image [N, E] with neg_image_index [N], neg_text [M, E] with neg_text_index [M]
            (optional): mined hard negatives and the image rows they belong to.
        own_text [B, f, E] (optional): each image row's own extra negative captions (foils: near
            misses false of that image), extra i2t columns of that row only.
        rank, world_size: passed in (retrerank.distributed); world_size 1 is the plain batch.
    Positives and negatives: a row's positive is its own pair (the diagonal). Every other cell of
        the row is a negative, except cells of a true match: two captions of the same image are
        never negatives of each other, and with `relevant` no caption is a negative of an image it
        is true of; those cells are masked. Mined extras become extra columns: `neg_image` of every
        text row (t2i), `neg_text` of every image row (i2t); a cell whose extra belongs to the
        row's own image is masked. An extra that is also in the batch counts twice in the
        denominator, as a sampled duplicate would. `own_text` adds f columns to each image row, its
        own foils only: a foil of one image may be true of another, so no other row sees it
        (NegCLIP's hard negative captions, Yuksekgonul et al. 2023, kept to their own image).
    Published loss: CLIP's symmetric cross-entropy (Radford et al., 2021; sentence-transformers'
        MultipleNegativesSymmetricRankingLoss is the same idea), with the logit scale learned as
        log(1 / temperature) and clamped at MAX_LOGIT_SCALE as CLIP does, plus masking of true
        matches. Under data parallelism (world_size > 1) every rank sees the negatives of all ranks:
        embeddings are all-gathered *with* gradient and each rank computes the loss of its own rows
        against the whole global batch (open_clip's gather_with_grad + local_loss). The mean of the
        ranks' losses is the single-process loss over the global batch, and after DDP averages the
        gradients they are that loss's gradients too (tested with 2 CPU processes).
    Returns: a scalar, the mean of the t2i and i2t cross-entropies over this rank's rows.
    """

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
        own_text: torch.Tensor | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> torch.Tensor:
        all_text, all_image, all_index, offset, all_relevant = gather_batch(
            text, image, image_index, relevant, rank, world_size
        )
        rows = torch.arange(len(text), device=text.device)
        target = offset + rows
        # true matches (two captions of one image, or exact relevance) are not negatives; the
        # row's own positive stays
        t2i_match = true_of(relevant, image_index, all_index)  # this rank's captions x all images
        i2t_match = true_of(all_relevant, all_index, image_index).T  # this rank's images x all captions
        t2i_match[rows, target] = False
        i2t_match[rows, target] = False
        t2i = (self.scale * text @ all_image.T).masked_fill(t2i_match, float("-inf"))
        i2t = (self.scale * image @ all_text.T).masked_fill(i2t_match, float("-inf"))
        if neg_image is not None:
            all_extra, extra_index = gather_extra(neg_image, neg_image_index, rank, world_size)
            t2i = torch.cat([t2i, self._extra(text, all_extra, true_of(relevant, image_index, extra_index))], 1)
        if neg_text is not None:  # mined captions are never true of the row's image (mining excludes them)
            all_extra, extra_index = gather_extra(neg_text, neg_text_index, rank, world_size)
            own = image_index[:, None] == extra_index[None, :]
            i2t = torch.cat([i2t, self._extra(image, all_extra, own)], 1)
        if own_text is not None:
            i2t = torch.cat([i2t, self.scale * (image[:, None, :] * own_text).sum(-1)], 1)
        return (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target)) / 2

    def _extra(self, rows: torch.Tensor, all_extra: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """Logits of the rows against every rank's extra negatives, true matches masked."""
        return (self.scale * rows @ all_extra.T).masked_fill(match, float("-inf"))
