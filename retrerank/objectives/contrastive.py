"""Symmetric InfoNCE over in-batch negatives with a learnable temperature.

Input contract: `text` [B, E] and `image` [B, E], L2-normalised, row i of each a
positive pair; `image_index` [B] identifies each row's image. Two captions of the
same image are never negatives of each other: those off-diagonal cells are masked. With exact
relevance (`relevant` [B, W], retrerank.objectives.relevance) every cell whose caption is true
of the cell's image is masked too: a true match is never a negative.

Extra negatives (mined hard negatives, optional): `neg_image` [N, E] with their image rows
`neg_image_index` [N] become extra columns of every text row (t2i), `neg_text` [M, E] with the
image rows of those captions `neg_text_index` [M] extra columns of every image row (i2t); a cell
whose extra item belongs to the row's own image is masked. An extra that is also in the batch
counts twice in the denominator, as a sampled duplicate would.

Under data parallelism (torch.distributed initialised, several ranks) every rank sees the
negatives of all ranks: embeddings are all-gathered *with* gradient and each rank computes the
loss of its own rows against the whole global batch (open_clip's gather_with_grad + local_loss).
The mean of the ranks' losses is the single-process loss over the global batch, and after
DDP averages the gradients they are that loss's gradients too (tested with 2 CPU processes).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from retrerank.objectives.relevance import gather_relevant, true_of
from retrerank.retrieval.sharding import world

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

    def forward(self, text: torch.Tensor, image: torch.Tensor, image_index: torch.Tensor,
                neg_image: torch.Tensor | None = None, neg_image_index: torch.Tensor | None = None,
                neg_text: torch.Tensor | None = None, neg_text_index: torch.Tensor | None = None,
                relevant: torch.Tensor | None = None) -> torch.Tensor:
        all_text, all_image, all_index, offset, all_relevant = _gather(text, image, image_index, relevant)
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
            all_extra, extra_index = _gather_extra(neg_image, neg_image_index)
            t2i = torch.cat([t2i, self._extra(text, all_extra, true_of(relevant, image_index, extra_index))], 1)
        if neg_text is not None:  # mined captions are never true of the row's image (mining excludes them)
            all_extra, extra_index = _gather_extra(neg_text, neg_text_index)
            own = image_index[:, None] == extra_index[None, :]
            i2t = torch.cat([i2t, self._extra(image, all_extra, own)], 1)
        return (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target)) / 2

    def _extra(self, rows: torch.Tensor, all_extra: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """Logits of the rows against every rank's extra negatives, true matches masked."""
        return (self.scale * rows @ all_extra.T).masked_fill(match, float("-inf"))


def _gather(text: torch.Tensor, image: torch.Tensor, image_index: torch.Tensor,
            relevant: torch.Tensor | None = None):
    """(all texts, all images, all image indices, this rank's first row, all relevant rows or None)
    over the ranks; the local tensors themselves when not distributed."""
    if world()[1] == 1:  # not distributed, or one rank working alone (sharding.local())
        return text, image, image_index, 0, relevant
    sizes = [torch.zeros((), dtype=torch.long, device=text.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(len(text), device=text.device))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(f"contrastive loss across ranks needs equal local batch sizes, got {[int(s) for s in sizes]} "
                         "(training loaders drop the last partial batch)")
    indices = [torch.empty_like(image_index) for _ in sizes]
    dist.all_gather(indices, image_index)
    offset = dist.get_rank() * len(text)
    return gather_with_grad(text), gather_with_grad(image), torch.cat(indices), offset, gather_relevant(relevant)


def _gather_extra(embeddings: torch.Tensor, image_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's extra negatives (with gradient) and their image rows; equal counts per rank
    (equal batch sizes, checked by `_gather`, times the same draws per item)."""
    if world()[1] == 1:
        return embeddings, image_index
    indices = [torch.empty_like(image_index) for _ in range(dist.get_world_size())]
    dist.all_gather(indices, image_index)
    return gather_with_grad(embeddings), torch.cat(indices)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' rows in rank order; backward sums every rank's gradient for the gathered rows
    (all-reduce) and keeps this rank's: each rank's loss reaches every rank's encoder.
    torch.distributed.nn's all_gather (deprecated) emulates that with all-to-all on gloo, which
    aborted 2-process CPU runs now and then; all-reduce is what every backend has."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = len(tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `tensor` (equal row counts), differentiable (see _GatherWithGrad)."""
    return _GatherWithGrad.apply(tensor)
