"""Raw image folders for pixel-based backbones: images decoded lazily, in the DataLoader workers.

`ImageFolder(root)` finds every image file below `root` (jpg, jpeg, png, webp, bmp) and keys it
the way captions name images: the COCO number for COCO file names, otherwise the file stem (as
region stores do). `FolderImage` holds only its path and id: it pickles small, and its pixels
are decoded on access, so decoding happens in whichever worker collates the batch, with the
pixel backbone's `collate_images` (the model's own image processor: resize, crop, normalise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrerank.data.errors import DataError
from retrerank.data.sources.text_files import image_id_from_filename

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class FolderImage:
    __slots__ = ("path", "image_id")

    def __init__(self, path: str | Path, image_id: str):
        self.path, self.image_id = Path(path), image_id

    def __reduce__(self):
        return FolderImage, (str(self.path), self.image_id)

    def open(self, size: int | None = None):
        """The decoded RGB image (PIL), resized to size x size when given; DataError if unreadable."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as image:
                image = image.convert("RGB")
                return image.resize((size, size), Image.Resampling.BICUBIC) if size else image
        except (OSError, UnidentifiedImageError, ValueError) as err:  # truncated, corrupt, missing
            raise DataError(f"image {self.image_id!r}: cannot decode {self.path}: {err}") from None

    @property
    def pixels(self) -> np.ndarray:
        """[H, W, 3] uint8, decoded now (nothing is cached)."""
        return np.asarray(self.open())


class ImageFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self._paths: dict[str, Path] = {}
        for path in sorted(p for p in self.root.rglob("*") if p.suffix.lower() in EXTENSIONS):
            image_id = image_id_from_filename(path.name)
            if image_id in self._paths:
                raise DataError(
                    f"image folder {self.root}: {path} and {self._paths[image_id]} both give image id {image_id!r}"
                )
            self._paths[image_id] = path
        if not self._paths:
            raise DataError(f"image folder {self.root} has no images ({', '.join(EXTENSIONS)})")

    @property
    def path(self) -> Path:
        return self.root

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._paths

    @property
    def ids(self) -> list[str]:
        return list(self._paths)

    def image(self, image_id: str) -> FolderImage:
        if image_id not in self._paths:
            raise DataError(f"image {image_id!r} is not in the image folder {self.root}")
        return FolderImage(self._paths[image_id], image_id)
