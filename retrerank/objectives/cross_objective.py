"""The cross-encoder's objective: the pairs of a batch it is trained on, its matching loss over them,
and the distillation of its logits into the bi-encoder.

The contract is on `CrossObjective`. The pairs come as blocks (retrerank.types.PairBlock) that the
caller's scorer turns into cross-encoder logits: how a pair is scored (whole, or late interaction
over cached lower states, a chunk at a time under GradCache) is the network's business, not the
loss's. The losses themselves are matching.py's `matching_loss`, listwise.py's `listwise_loss` and
distill.py's `distill_loss`; this module lays out their inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from retrerank.objectives.distill import distill_loss
from retrerank.objectives.listwise import listwise_loss
from retrerank.objectives.matching import matching_loss, sampled_pairs
from retrerank.types import Inputs, PairBlock

if TYPE_CHECKING:
    from retrerank.config import ObjectiveConfig

T2I, I2T = 0, 1  # a negative block's direction: (caption, negative image) or (negative caption, image)

Batch = dict[str, Inputs | torch.Tensor]


def take(batch: Inputs, rows: torch.Tensor) -> Inputs:
    """Rows of every tensor of a text or image batch."""
    return {key: value[rows] for key, value in batch.items()}


class CrossPairs(NamedTuple):
    """The matching loss's pairs: blocks (the positives first), their logits, and for each negative
    block the rows that have it, its negatives per row and its direction (T2I or I2T)."""

    blocks: list[PairBlock]
    scores: torch.Tensor
    kept: list[tuple[torch.Tensor, int, int]]
    keep: torch.Tensor  # the rows that every negative block has
    size: int  # the positives

    def groups(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores laid out as the blocks are: the kept rows' positives [R] and their t2i [R, n] and
        i2t [R, m] negatives (every negative block of a direction side by side)."""
        groups, start = [[], []], self.size
        for has, num, direction in self.kept:
            block = scores[start : start + int(has.sum()) * num].view(-1, num)
            start += block.numel()
            groups[direction].append(block[self.keep[has]])  # rows of this block that every block has
        return scores[: self.size][self.keep], torch.cat(groups[0], 1), torch.cat(groups[1], 1)


def select_foils(batch: Batch, num: int) -> tuple[Inputs, int] | None:
    """The batch's foil captions (`foil_text`, item-major, the same count per image) cut to the first
    `num` of each image, and how many that leaves per image; None where the batch has no foils or
    `num` is 0."""
    if "foil_text" not in batch or not num:
        return None
    foil_text, size = batch["foil_text"], len(batch["image_index"])
    have = len(next(iter(foil_text.values()))) // size
    num = min(have, num)
    if num == have:
        return foil_text, num
    rows = (torch.arange(size)[:, None] * have + torch.arange(num)).reshape(-1)
    return take(foil_text, rows.to(batch["image_index"].device)), num


def bi_logits(blocks: list[PairBlock], embeddings: dict[int, torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """The bi-encoder's logit (scale x cosine) of every pair of the blocks, in order: what
    eval.scoring=cross+bi adds to the cross logit. `embeddings` maps id(inputs) to their
    L2-normalised bi-encoder embeddings."""
    missing = [
        kind
        for texts, _, images, _ in blocks
        for kind, inputs in (("texts", texts), ("images", images))
        if id(inputs) not in embeddings
    ]
    if missing:
        raise ValueError(
            f"objective.cross_residual: no bi-encoder embeddings of some pairs' {missing[0]} "
            "(mined negatives need objective.mining.contrastive=true)"
        )
    cosines = [
        (embeddings[id(texts)][text_rows] * embeddings[id(images)][image_rows]).sum(-1)
        for texts, text_rows, images, image_rows in blocks
    ]
    return scale * torch.cat(cosines)


class CrossObjective:
    """The cross-encoder's matching loss over the batch's positive and negative pairs.

    Inputs:
        batch: `text`, `image` (token ids + mask; region features, boxes + mask, or pixels) and
            `image_index` [B], row i a positive pair; optionally exact relevance `relevant` [B, W]
            (retrerank.objectives.relevance), mined negatives `neg_image`, `neg_image_index` [B, k],
            `neg_text`, `neg_text_index` [B, k] (item-major, k per row), and foil captions
            `foil_text` (f per row, item-major; near misses false of the row's image).
        embeddings: id(inputs) -> detached L2-normalised bi-encoder embeddings of the batch's
            `text` and `image`; where the residual score reads them, also of the mined inputs and of
            the foil captions that `foils` returns (keyed by that object).
        score: blocks of pairs -> their cross-encoder logits, in order.
        scale: the contrastive loss's trained logit scale (detached here, except in `distill`).
        rank, world_size: passed in (retrerank.distributed), for objective.global_negatives.
        config: the ObjectiveConfig it reads (held, not copied): hard_negatives, random_negatives,
            global_negatives, mining.matching, foil_negatives, cross_residual, cross_loss,
            distill_temperature.
    Positives and negatives: each row's own pair is its positive. Its negatives per direction are
        `hard_negatives` drawn from softmax(scale x cosine) over the cells that are not true matches
        plus `random_negatives` drawn uniformly (objectives/matching.py `sampled_pairs`; rows with
        no such cell in either direction keep their positive but lose these negatives), and/or the
        row's mined image and caption (mining.matching: add | replace), then its first
        `foil_negatives` foils as more i2t negatives. With cross_residual every logit is the cross
        logit plus the detached bi-encoder logit of the pair.
    Published loss: ALBEF's image-text matching over negatives sampled from the bi-encoder
        (cross_loss=bce, `matching_loss`), or localized contrastive estimation over each row's
        positive and its negatives per direction (cross_loss=listwise, `listwise_loss`); a batch
        where no row has a negative falls back to bce. `distill` is Hinton's soft-target
        distillation of these logits into the bi-encoder's over the same candidates (`distill_loss`).
    Returns: `pairs` the CrossPairs (blocks and their logits), `loss` a scalar matching loss,
        `distill` a scalar (the mean over the two directions).
    """

    def __init__(self, config: ObjectiveConfig):
        self.config = config

    def foils(self, batch: Batch) -> tuple[Inputs, int] | None:
        """The foil captions the matching loss uses, and how many per image (see `select_foils`)."""
        return select_foils(batch, self.config.foil_negatives)

    def pairs(
        self,
        batch: Batch,
        embeddings: dict[int, torch.Tensor],
        score: Callable[[list[PairBlock]], torch.Tensor],
        scale: torch.Tensor,
        relevant: torch.Tensor | None = None,
        foils: tuple[Inputs, int] | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> CrossPairs:
        """The positives, the negative blocks t2i before i2t (sampled, mined, then foils), and their
        logits. `foils`: what `self.foils(batch)` gives (computed here when None)."""
        config = self.config
        text, image, image_index = batch["text"], batch["image"], batch["image_index"]
        size = len(image_index)
        rows = torch.arange(size, device=image_index.device)
        mined = "neg_image" in batch and config.mining.matching != "none"
        blocks: list[PairBlock] = [(text, rows, image, rows)]
        kept = []  # (batch rows of a block's query, negatives per row, direction) of each negative block
        keep = torch.ones(size, dtype=torch.bool, device=image_index.device)
        if not mined or config.mining.matching == "add":
            sampled, keep = sampled_pairs(
                text,
                image,
                image_index,
                embeddings[id(text)],
                embeddings[id(image)],
                scale.detach(),  # the draws follow the trained scale (see sampled_pairs)
                config.hard_negatives,
                config.random_negatives,
                relevant,
                global_negatives=config.global_negatives,
                rank=rank,
                world_size=world_size,
            )
            blocks += sampled
            num = config.hard_negatives + config.random_negatives
            kept += [(keep, num, T2I), (keep, num, I2T)]
        if mined:
            num = batch["neg_image_index"].shape[1]
            own = rows.repeat_interleave(num)  # item-major, as collated
            every = torch.arange(size * num, device=rows.device)
            blocks += [(text, own, batch["neg_image"], every), (batch["neg_text"], every, image, own)]
            kept += [(torch.ones_like(keep), num, T2I), (torch.ones_like(keep), num, I2T)]
        foils = foils if foils is not None else self.foils(batch)
        if foils is not None:
            texts, num = foils
            blocks.append((texts, torch.arange(size * num, device=rows.device), image, rows.repeat_interleave(num)))
            kept.append((torch.ones_like(keep), num, I2T))
        scores = score(blocks)
        if config.cross_residual:
            scores = scores + bi_logits(blocks, embeddings, scale.detach())
        return CrossPairs(blocks, scores, kept, keep, size)

    def loss(self, pairs: CrossPairs) -> torch.Tensor:
        """The matching loss (cross_loss: pointwise bce, or listwise) of the pairs' logits."""
        scores, size = pairs.scores, pairs.size
        if self.config.cross_loss == "bce" or not pairs.keep.any():  # (no row has negatives: a one-image batch)
            return matching_loss(scores[:size], scores[size:])
        return listwise_loss(*pairs.groups(scores))

    def distill(self, pairs: CrossPairs, embeddings: dict[int, torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
        """The bi-encoder's logits over each row's candidates (from `embeddings`, with gradient, and
        `scale`) pulled toward the cross-encoder's (detached), per direction; zero where no row has
        negatives."""
        if not pairs.keep.any():
            return pairs.scores.new_zeros(())
        student = pairs.groups(bi_logits(pairs.blocks, embeddings, scale))
        teacher = pairs.groups(pairs.scores)
        t = self.config.distill_temperature
        losses = [
            distill_loss(
                torch.cat([student[0][:, None], student[d]], 1), torch.cat([teacher[0][:, None], teacher[d]], 1), t
            )
            for d in (1, 2)
        ]
        return (losses[0] + losses[1]) / 2
