"""Listwise matching loss for the cross-encoder: localized contrastive estimation (LCE).

The pointwise alternative is matching.py's `matching_loss`; the contract is on `listwise_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def listwise_loss(positive: torch.Tensor, t2i: torch.Tensor, i2t: torch.Tensor) -> torch.Tensor:
    """Each row's positive ranked against its own negatives, per direction.

    Inputs:
        positive [R]: cross-encoder logits of matched pairs.
        t2i [R, n]: logits of (caption r, negative image), drawn from the bi-encoder's candidates.
        i2t [R, m]: logits of (negative caption, image r), likewise.
    Positives and negatives: row r's positive is positive[r]; its negatives are the row's own
        groups only (t2i[r] for the caption, i2t[r] for the image), never other rows' pairs.
    Published loss: localized contrastive estimation (Gao et al., 2021, "Rethink Training of BERT
        Rerankers Using Multi-stage Retrieval Pipeline"): a softmax over the positive and its
        negatives with the positive as the target, so the cross-encoder learns to rank the
        positive above the candidates it will rerank, which is what retrieve-then-rerank asks of
        it, instead of calibrating each pair on its own (pointwise BCE).
    Returns: a scalar, the mean over the rows of both directions' cross entropies, halved.
    """
    if t2i.shape[0] != positive.shape[0] or i2t.shape[0] != positive.shape[0]:
        raise ValueError(
            f"listwise_loss: {positive.shape[0]} positives but negative groups of "
            f"{t2i.shape[0]} and {i2t.shape[0]} rows"
        )
    target = torch.zeros(len(positive), dtype=torch.long, device=positive.device)
    losses = [F.cross_entropy(torch.cat([positive[:, None], group], 1), target) for group in (t2i, i2t)]
    return (losses[0] + losses[1]) / 2
