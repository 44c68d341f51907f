"""The records every dataset format is turned into, and the split that groups them.

A split is many-to-many: an image has several captions (possibly in several languages), a
caption is written for exactly one image (its *own* image, `caption_image_index`).

Exact relevance. A caption may also be true of other images than the one it was written for
("a red circle" describes every scene with a red circle in it). Where a dataset knows this (the
synthetic data does, exactly; ECCV Caption, Chun et al. 2022, annotated it for COCO), it lists
those other images in `CaptionRecord.also`; real datasets leave it empty. The split resolves it
into `caption_relevant` (the t2i ground truth) and `image_captions()` (the i2t ground truth),
which evaluation uses; `caption_image_index` stays the caption's own image, which training pairs
a caption with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One image as detector-like regions, and as pixels where the source has them.

    features: [R, D] float32 region features; boxes: [R, 4] (x1, y1, x2, y2),
    normalised to [0, 1] by the image width and height; pixels: [H, W, 3] uint8 RGB,
    the picture the boxes refer to (None: regions only), as `FolderImage.pixels` gives it.
    near: ids of the images of its split that the dataset knows to be near-duplicates of this one
    (the synthetic twins; real datasets leave it empty). Training may put them in one batch
    (data.near_duplicate_batches), so that each is the other's hard negative.
    """

    image_id: str
    features: np.ndarray
    boxes: np.ndarray
    pixels: np.ndarray | None = None
    near: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of `image_id`; `also`: ids of the other images of its split that the caption is
    also true of (exact relevance, where the dataset knows it; empty otherwise). `foils`: texts in
    the caption's language that are near misses of it and false of its image (the synthetic data's
    swapped colours, sizes, relations; real datasets leave it empty); training may use them as the
    image's hard negative captions (objective.foil_negatives)."""

    caption_id: str
    image_id: str
    text: str
    lang: str = "en"
    also: tuple[str, ...] = ()  # a tuple, so that records stay hashable
    foils: tuple[str, ...] = ()


@dataclass
class RetrievalSplit:
    """Images and their captions.

    `caption_image_index[j]`: the row in `images` of caption j's own image (what training pairs it
    with). `caption_relevant[j]`: int64 rows of every image caption j is true of, its own row first,
    then the rows of its `also` ids in that order (ids not in the split, e.g. images dropped by
    filtering, are ignored), no duplicates (arrays may be shared between captions: treat them as
    read-only). `exact_relevance`: whether any caption is true of more than its own image.
    Evaluation's ground truth is `caption_relevant` / `image_captions()`.
    """

    name: str
    images: list[ImageRecord]
    captions: list[CaptionRecord]
    caption_image_index: np.ndarray = field(init=False)
    caption_relevant: list[np.ndarray] = field(init=False, repr=False)
    exact_relevance: bool = field(init=False)

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
                    f"split {self.name!r}: caption {caption.caption_id!r} refers to unknown image {caption.image_id!r}"
                )
            index[j] = position[caption.image_id]
        self.caption_image_index = index
        self._resolve_relevance(position)

    def _resolve_relevance(self, position: dict[str, int]) -> None:
        index = self.caption_image_index
        relevant = list(index.reshape(-1, 1))  # views: no copy per caption
        resolved: dict[tuple, np.ndarray] = {}  # translations of a caption share their (own, also)
        for j, caption in enumerate(self.captions):
            if not caption.also:
                continue
            own = int(index[j])
            key = (own, tuple(caption.also))
            rows = resolved.get(key)
            if rows is None:
                others = dict.fromkeys(position[i] for i in caption.also if i in position)
                others.pop(own, None)
                rows = resolved[key] = np.array([own, *others], dtype=np.int64) if others else index[j : j + 1]
            relevant[j] = rows
        self.caption_relevant = relevant
        self.exact_relevance = any(len(rows) > 1 for rows in resolved.values())

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.captions]

    def image_captions(self) -> list[np.ndarray]:
        """For each image row, the caption rows true of it, ascending (the i2t ground truth): the
        inverse of `caption_relevant`; without exact relevance, the captions written for it."""
        if self.exact_relevance:
            lengths = np.fromiter(map(len, self.caption_relevant), np.int64, len(self.captions))
            image_rows = np.concatenate(self.caption_relevant)
            caption_rows = np.repeat(np.arange(len(self.captions)), lengths)
        else:
            image_rows, caption_rows = self.caption_image_index, np.arange(len(self.captions))
        order = np.argsort(image_rows, kind="stable")  # caption rows ascend, so they stay ascending per image
        counts = np.bincount(image_rows, minlength=len(self.images))
        return np.split(caption_rows[order], np.cumsum(counts)[:-1])

    def filter_languages(self, langs: list[str]) -> RetrievalSplit:
        """The same images with only the captions in `langs`; images left without captions are dropped
        (and with them the relevance of other captions to them)."""
        captions = [c for c in self.captions if c.lang in langs]
        if not captions:
            raise ValueError(f"split {self.name!r} has no captions in languages {langs}")
        kept = {c.image_id for c in captions}
        return RetrievalSplit(self.name, [im for im in self.images if im.image_id in kept], captions)
