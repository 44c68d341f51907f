"""Negatives for the cross-encoder's matching loss, sampled from the bi-encoder, and the pointwise loss.

Input contract: `similarity` [B, B] bi-encoder logits of the batch (text rows, image
columns; detached, temperature-scaled), `image_index` [B], optionally `match` [B, B] (caption
row true of the image of column; retrerank.objectives.relevance.true_of) where the dataset
knows more true matches than a caption's own image. Negatives are sampled with probability
softmax(similarity) over the cells that are not true matches (ALBEF style): similar-looking
mismatches are picked most often, but not always the single nearest one. An all-zero
`similarity` samples uniformly (random negatives). The listwise alternative is listwise.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_negatives(similarity: torch.Tensor, image_index: torch.Tensor, num: int,
                     generator: torch.Generator | None = None, match: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (negative image column per text [B, num], negative text row per image [B, num],
    valid [B]: rows that have an in-batch negative in both directions).

    A row with fewer than `num` negatives samples with replacement; a row with none
    (a batch of captions of a single image) is invalid and its columns are meaningless.
    """
    same = image_index[:, None] == image_index[None, :] if match is None else match
    text_to_image, t2i_valid = _draw(similarity, same, num, generator)
    image_to_text, i2t_valid = _draw(similarity.T, same.T, num, generator)
    return text_to_image, image_to_text, t2i_valid & i2t_valid


def _draw(similarity: torch.Tensor, excluded: torch.Tensor, num: int, generator: torch.Generator | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """num columns per row from softmax(similarity) over the cells not `excluded`; rows with any."""
    valid = (~excluded).any(1)
    # give invalid rows a dummy uniform distribution so that multinomial can run
    masked = similarity.float().masked_fill(excluded, float("-inf")).masked_fill(~valid[:, None], 0.0)
    replacement = bool((~excluded).sum(1)[valid].min() < num) if valid.any() else True
    return torch.multinomial(F.softmax(masked, dim=1), num, replacement, generator=generator), valid


def matching_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BCE with logits: `positive` [P] cross scores of matched pairs, `negative` [N] of mismatched."""
    logits = torch.cat([positive, negative])
    labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
    return F.binary_cross_entropy_with_logits(logits, labels)
