"""Which (caption, image) cells of a batch are true matches: the losses' and samplers' one rule.

A batch row is a caption with its own image (`image_index` [B], the image's row in its split).
Without exact relevance a caption is true of its own image only, so two cells match when their
image rows are equal. A dataset that knows every image a caption is true of (exact relevance,
`CaptionRecord.also`) gives the batch `relevant` [B, W]: the image rows each caption is true of,
own row first, padded with -1. A true match is never a negative: not in the contrastive loss,
not in the matching loss's sampled negatives, not among mined negatives.
"""

from __future__ import annotations

import torch


def true_of(relevant: torch.Tensor | None, caption_image: torch.Tensor, image_rows: torch.Tensor) -> torch.Tensor:
    """[C, I] bool: caption c (own image row `caption_image[c]`, true of the image rows `relevant[c]`,
    or of its own image only when `relevant` is None) is true of the image in row `image_rows[i]`."""
    if relevant is None:
        return caption_image[:, None] == image_rows[None, :]
    return (relevant[:, :, None] == image_rows[None, None, :]).any(1)
