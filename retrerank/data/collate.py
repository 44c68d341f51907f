"""Turn records into padded tensors: the batch contract of the backbones."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from retrerank.data.records import ImageRecord


def collate_images(images: Sequence[ImageRecord]) -> dict[str, torch.Tensor]:
    """Pad a list of images to the largest region count.

    Returns features [B, R, D] float32, boxes [B, R, 4] float32, region_mask [B, R] bool
    (True for real regions).
    """
    if not images:
        raise ValueError("collate_images got an empty list")
    dims = {im.features.shape[1] for im in images}
    if len(dims) != 1:
        raise ValueError(f"images in one batch have different feature widths {sorted(dims)}")
    width = dims.pop()
    regions = max(im.features.shape[0] for im in images)
    features = np.zeros((len(images), regions, width), dtype=np.float32)
    boxes = np.zeros((len(images), regions, 4), dtype=np.float32)
    mask = np.zeros((len(images), regions), dtype=bool)
    for i, im in enumerate(images):
        r = im.features.shape[0]
        features[i, :r] = im.features
        boxes[i, :r] = im.boxes
        mask[i, :r] = True
    return {
        "features": torch.from_numpy(features),
        "boxes": torch.from_numpy(boxes),
        "region_mask": torch.from_numpy(mask),
    }
