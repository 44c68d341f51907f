"""The cross-encoder's pointwise matching loss, and the negative pairs it is trained on.

Negatives are sampled from the bi-encoder (ALBEF style): with probability softmax(similarity)
over the cells that are not true matches, so similar-looking mismatches are picked most often,
but not always the single nearest one; an all-zero similarity samples uniformly (random
negatives). `sample_negatives` draws them within the batch, `sampled_pairs` turns them into the
blocks of pairs the system scores (or, with objective.global_negatives, draws them among every
rank's items through retrerank.objectives.global_negatives). The listwise alternative to
`matching_loss` is listwise.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrerank.objectives.global_negatives import global_negative_pairs
from retrerank.objectives.relevance import true_of
from retrerank.types import Inputs, PairBlock


def matching_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Pointwise binary cross-entropy of the cross-encoder's matching logits.

    Inputs:
        positive [P]: cross-encoder logits of matched pairs (a caption with its own image, or one
            it is true of).
        negative [N]: logits of mismatched pairs, e.g. from `sampled_pairs` or mined negatives.
    Positives and negatives: each pair is its own decision, label 1 for `positive`, 0 for
        `negative`; nothing ties a positive to its negatives.
    Published loss: the image-text matching (ITM) loss of ALBEF (Li et al., 2021) over hard
        negatives sampled from the bi-encoder, written as binary rather than 2-way cross-entropy
        (the same loss for a single logit); the mean over all P + N pairs, so the positives' share
        follows the number of negatives per positive.
    Returns: a scalar, the mean binary cross-entropy with logits.
    """
    logits = torch.cat([positive, negative])
    labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
    return F.binary_cross_entropy_with_logits(logits, labels)


def sample_negatives(
    similarity: torch.Tensor,
    image_index: torch.Tensor,
    num: int,
    generator: torch.Generator | None = None,
    match: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In-batch negatives for both directions.

    Input contract: `similarity` [B, B] bi-encoder logits of the batch (text rows, image columns;
    detached, temperature-scaled), `image_index` [B], optionally `match` [B, B] (caption row true of
    the image of column; retrerank.objectives.relevance.true_of) where the dataset knows more true
    matches than a caption's own image.

    Returns (negative image column per text [B, num], negative text row per image [B, num],
    valid [B]: rows that have an in-batch negative in both directions).

    A row with fewer than `num` negatives samples with replacement; a row with none
    (a batch of captions of a single image) is invalid and its columns are meaningless.
    """
    same = image_index[:, None] == image_index[None, :] if match is None else match
    text_to_image, t2i_valid = _draw(similarity, same, num, generator)
    image_to_text, i2t_valid = _draw(similarity.T, same.T, num, generator)
    return text_to_image, image_to_text, t2i_valid & i2t_valid


def _draw(
    similarity: torch.Tensor, excluded: torch.Tensor, num: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """num columns per row from softmax(similarity) over the cells not `excluded`; rows with any."""
    valid = (~excluded).any(1)
    # give invalid rows a dummy uniform distribution so that multinomial can run
    masked = similarity.float().masked_fill(excluded, float("-inf")).masked_fill(~valid[:, None], 0.0)
    replacement = bool((~excluded).sum(1)[valid].min() < num) if valid.any() else True
    return torch.multinomial(F.softmax(masked, dim=1), num, replacement, generator=generator), valid


def sampled_pairs(
    text: Inputs,
    image: Inputs,
    image_index: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    scale: float | torch.Tensor,
    hard: int,
    uniform: int,
    relevant: torch.Tensor | None = None,
    *,
    global_negatives: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[list[PairBlock], torch.Tensor]:
    """The matching loss's negative pairs of a batch, as blocks the cross-encoder scores.

    Input contract: the batch's `text` and `image` inputs, `image_index` [B], their detached
    bi-encoder embeddings `text_emb`, `image_emb` [B, E], the contrastive loss's `scale` (the
    draws follow softmax(scale * cosine): raw cosines in [-1, 1] make softmax nearly uniform, i.e.
    random rather than hard negatives), `hard` negatives per row from those similarities and
    `uniform` random ones (they keep the easy distinctions in the training signal), and optionally
    exact relevance `relevant` [B, W] (retrerank.objectives.relevance). global_negatives: draw among
    every rank's items (`rank`, `world_size`; retrerank.objectives.global_negatives).

    Returns ([(texts, rows, their negative images, rows), (negative texts, rows, images, rows)],
    valid [B]): item-major over the rows that have negatives in both directions, and those rows.
    True matches are never drawn.
    """
    if global_negatives:
        pairs, valid = global_negative_pairs(
            text,
            image,
            image_index,
            text_emb,
            image_emb,
            scale,
            hard,
            uniform,
            relevant=relevant,
            rank=rank,
            world_size=world_size,
        )
        return [_aligned(t, i) for t, i in pairs], valid
    similarity = scale * text_emb @ image_emb.T
    match = None if relevant is None else true_of(relevant, image_index, image_index)
    sampled = [
        sample_negatives(sim, image_index, n, match=match)
        for sim, n in ((similarity, hard), (torch.zeros_like(similarity), uniform))
        if n > 0
    ]
    neg_image = torch.cat([s[0] for s in sampled], 1)
    neg_text = torch.cat([s[1] for s in sampled], 1)
    valid, num = sampled[0][2], hard + uniform
    rows = torch.arange(len(image_index), device=image_index.device)
    has_neg = rows[valid].repeat_interleave(num)
    return [
        (text, has_neg, image, neg_image[valid].reshape(-1)),
        (text, neg_text[valid].reshape(-1), image, has_neg),
    ], valid


def _aligned(texts: Inputs, images: Inputs) -> PairBlock:
    """A block of aligned, already materialised pairs (text i, image i)."""
    first = next(iter(texts.values()))
    rows = torch.arange(len(first), device=first.device)
    return texts, rows, images, rows
