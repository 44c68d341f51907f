"""Binary image-text matching over positives and hard negatives, in both directions.

Input contract: `similarity` [B, B] bi-encoder logits of the batch (text rows, image
columns; detached, temperature-scaled), `image_index` [B]. Negatives are sampled with
probability softmax(similarity) over the cells that are not the same image (ALBEF
style): similar-looking mismatches are picked most often, but not always the single
nearest one, which may be an unlabeled match. An all-zero `similarity` samples
uniformly (random negatives).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_negatives(similarity: torch.Tensor, image_index: torch.Tensor, num: int,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (negative image column per text [B, num], negative text row per image [B, num],
    valid [B]: rows that have any in-batch negative at all).

    A row with fewer than `num` negatives samples with replacement; a row with none
    (a batch of captions of a single image) is invalid and its columns are meaningless.
    """
    same = image_index[:, None] == image_index[None, :]
    valid = (~same).any(1)
    # give invalid rows a dummy uniform distribution so that multinomial can run
    masked = similarity.float().masked_fill(same, float("-inf")).masked_fill(~valid[:, None], 0.0)
    replacement = bool((~same).sum(1)[valid].min() < num) if valid.any() else True
    text_to_image = torch.multinomial(F.softmax(masked, dim=1), num, replacement, generator=generator)
    image_to_text = torch.multinomial(F.softmax(masked.T, dim=1), num, replacement, generator=generator)
    return text_to_image, image_to_text, valid


def matching_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BCE with logits: `positive` [P] cross scores of matched pairs, `negative` [N] of mismatched."""
    logits = torch.cat([positive, negative])
    labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
    return F.binary_cross_entropy_with_logits(logits, labels)
