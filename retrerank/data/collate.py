"""Turn records into padded tensors: the batch contract of the backbones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from retrerank.data.records import ImageRecord


def _empty(shape: tuple[int, ...], dtype: type) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker allocated in shared memory, as default_collate
    does, so that handing the batch to the main process does not copy it again (~10 ms for 128 x 36
    x 2048 float16 regions)."""
    torch_dtype = torch.float16 if dtype == np.float16 else torch.float32
    if get_worker_info() is None or not hasattr(torch.UntypedStorage, "_new_shared"):
        return torch.empty(shape, dtype=torch_dtype)
    nbytes = int(np.prod(shape)) * torch.empty(0, dtype=torch_dtype).element_size()
    return torch.empty(0, dtype=torch_dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)


def collate_images(images: Sequence[ImageRecord]) -> dict[str, torch.Tensor]:
    """Pad a list of images to the largest region count.

    Returns features [B, R, D] (float16 when every image's features are float16, as read from a
    float16 region store, else float32: the backbone casts to its own dtype), boxes [B, R, 4]
    float32, region_mask [B, R] bool (True for real regions).
    """
    if not images:
        raise ValueError("collate_images got an empty list")
    # read each image once: a StoredImage reads its file on every access to .features / .boxes
    feats = [im.features for im in images]
    boxes = [im.boxes for im in images]
    dims = {f.shape[1] for f in feats}
    if len(dims) != 1:
        raise ValueError(f"images in one batch have different feature widths {sorted(dims)}")
    width = dims.pop()
    regions = max(f.shape[0] for f in feats)
    dtype = np.float16 if all(f.dtype == np.float16 for f in feats) else np.float32
    features_t = _empty((len(images), regions, width), dtype)
    features = features_t.numpy()
    box_out = np.zeros((len(images), regions, 4), dtype=np.float32)
    mask = np.zeros((len(images), regions), dtype=bool)
    for i, (f, b) in enumerate(zip(feats, boxes)):
        r = f.shape[0]
        features[i, :r] = f
        features[i, r:] = 0
        box_out[i, :r] = b
        mask[i, :r] = True
    return {
        "features": features_t,
        "boxes": torch.from_numpy(box_out),
        "region_mask": torch.from_numpy(mask),
    }


def pad_cat(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Text or image batches (same keys) as one: rows concatenated, dim 1 (tokens or regions)
    zero-padded to the longest. Padding is zeros / False, i.e. masked positions, so a model that
    honours the masks gives each row the same result as in its own batch."""
    if not batches:
        raise ValueError("pad_cat got no batches")
    out = {}
    for key in batches[0]:
        parts = [batch[key] for batch in batches]
        length = max(part.shape[1] for part in parts)
        out[key] = torch.cat(
            [torch.nn.functional.pad(part, [0, 0] * (part.dim() - 2) + [0, length - part.shape[1]]) for part in parts]
        )
    return out
