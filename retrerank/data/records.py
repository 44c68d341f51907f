"""The records every dataset format is turned into, and the split that groups them.

A split is many-to-many: an image has several captions (possibly in several
languages), a caption has exactly one image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One image as detector-like regions, and as pixels where the source has them.

    features: [R, D] float32 region features; boxes: [R, 4] (x1, y1, x2, y2),
    normalised to [0, 1] by the image width and height; pixels: [H, W, 3] uint8 RGB,
    the picture the boxes refer to (None: regions only), as `FolderImage.pixels` gives it.
    """

    image_id: str
    features: np.ndarray
    boxes: np.ndarray
    pixels: Optional[np.ndarray] = None


@dataclass(frozen=True)
class CaptionRecord:
    caption_id: str
    image_id: str
    text: str
    lang: str = "en"


@dataclass
class RetrievalSplit:
    """Images and their captions; `caption_image_index[j]` is the row in `images` of caption j."""

    name: str
    images: list[ImageRecord]
    captions: list[CaptionRecord]
    caption_image_index: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        position = {}
        for i, image in enumerate(self.images):
            if image.image_id in position:
                raise ValueError(f"split {self.name!r}: duplicate image id {image.image_id!r}")
            position[image.image_id] = i
        index = np.empty(len(self.captions), dtype=np.int64)
        for j, caption in enumerate(self.captions):
            if caption.image_id not in position:
                raise ValueError(
                    f"split {self.name!r}: caption {caption.caption_id!r} refers to unknown image "
                    f"{caption.image_id!r}"
                )
            index[j] = position[caption.image_id]
        self.caption_image_index = index

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.captions]

    def image_captions(self) -> list[np.ndarray]:
        """For each image row, the caption rows that describe it (the i2t ground truth)."""
        order = np.argsort(self.caption_image_index, kind="stable")
        counts = np.bincount(self.caption_image_index, minlength=len(self.images))
        return np.split(order, np.cumsum(counts)[:-1])

    def filter_languages(self, langs: list[str]) -> "RetrievalSplit":
        """The same images with only the captions in `langs`; images left without captions are dropped."""
        captions = [c for c in self.captions if c.lang in langs]
        if not captions:
            raise ValueError(f"split {self.name!r} has no captions in languages {langs}")
        kept = {c.image_id for c in captions}
        return RetrievalSplit(self.name, [im for im in self.images if im.image_id in kept], captions)
