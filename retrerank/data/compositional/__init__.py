"""Compositional benchmarks, each read from its published files: can a model tell a caption from a near miss?

- winoground.load_winoground: Winoground (Thrush et al. 2022), examples.jsonl + images/<name>.png;
  two images and two captions per item, caption k true of image k
- sugarcrepe.load_sugarcrepe: SugarCrepe (Hsieh et al. 2023), one JSON file per category + COCO val2017
  images; one image, its caption and a negative caption per item
- aro.load_aro: ARO's VG-Relation and VG-Attribution (Yuksekgonul et al. 2023), one JSON list + images/,
  each image cropped to the record's box as ARO does; one image, a true and a false caption per item

Every loader returns a `Benchmark` and takes `bad: BadRecords | None` (None: strict), as the caption
sources do (retrerank.data.sources): a missing file, a line or record that is not JSON, a missing or
mistyped key and an image file that is not there each raise one DataError naming the file and the
record (strict), or skip the record and count it (lenient). Images are `FolderImage`s
(retrerank.data.stores.image_folder): only their path is kept, the pixels are decoded when a batch is
collated, so the benchmarks serve pixel backbones (CLIP, SigLIP, BLIP); none ships region features.
Scoring is retrerank.retrieval.compositional.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from retrerank.data.errors import DataError
from retrerank.data.stores.image_folder import FolderImage

# the benchmark names of data.compositional, and the folder below data.root each is read from by default
BENCHMARKS = {
    "winoground": "winoground",
    "sugarcrepe": "sugarcrepe",
    "aro_relation": "aro",
    "aro_attribution": "aro",
}
PAIR_OF_PAIRS = "winoground"  # two images x two captions; caption k is true of image k
TRUE_FALSE = "true_false"  # one image x (true caption, false caption)


@dataclass(frozen=True)
class Item:
    """One test case of a benchmark: rows of `Benchmark.images` and `Benchmark.texts`.

    PAIR_OF_PAIRS: images (i0, i1), captions (c0, c1), c0 true of i0 and c1 of i1.
    TRUE_FALSE: images (i,), captions (true, false)."""

    item_id: str
    images: tuple[int, ...]
    captions: tuple[int, ...]
    categories: tuple[str, ...] = ()


@dataclass
class Benchmark:
    """A benchmark's items over its distinct texts and images.

    `categories`: the categories reported, in table order (each item names its own in `Item.categories`);
    `macro`: those whose mean accuracy is the macro accuracy (TRUE_FALSE benchmarks)."""

    name: str
    kind: str
    texts: list[str]
    images: list[FolderImage]
    items: list[Item]
    categories: list[str] = field(default_factory=list)
    macro: list[str] = field(default_factory=list)


def slug(text: str) -> str:
    """A category as a metric-name part: lower case, each run of other characters than a-z and 0-9 one "_"."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class Builder:
    """Collects a benchmark's items; texts and images that recur are stored once."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.texts: list[str] = []
        self.images: list[FolderImage] = []
        self.items: list[Item] = []
        self._text_rows: dict[str, int] = {}
        self._image_rows: dict[object, int] = {}

    def text(self, text: str) -> int:
        if text not in self._text_rows:
            self._text_rows[text] = len(self.texts)
            self.texts.append(text)
        return self._text_rows[text]

    def image(self, key: object, image: FolderImage) -> int:
        """The row of the image stored under `key` (e.g. its file): `image` is kept only for a new key."""
        if key not in self._image_rows:
            self._image_rows[key] = len(self.images)
            self.images.append(image)
        return self._image_rows[key]

    def add(self, item_id: str, images: tuple[int, ...], captions: tuple[int, ...], categories=()) -> None:
        self.items.append(Item(item_id, images, captions, tuple(categories)))

    def build(self, where: Path, categories: list[str], macro: list[str] | None = None) -> Benchmark:
        if not self.items:
            raise DataError(f"{where}: no {self.name} items to score")
        return Benchmark(self.name, self.kind, self.texts, self.images, self.items, categories, macro or [])


def has_keys(record: object, keys, where: str, bad, what: str = "a record") -> bool:
    """Whether `record` is a JSON object with every one of `keys`; if not, `bad` is told why, naming `where`."""
    if not isinstance(record, dict):
        bad.bad("not an object", f"{where}: not a JSON object ({what} has {', '.join(keys)})")
        return False
    missing = [key for key in keys if key not in record]
    if missing:
        bad.bad("missing key", f"{where}: no {missing[0]!r} ({what} has {', '.join(keys)})")
        return False
    return True


def text_field(record: dict, key: str) -> str | None:
    """record[key] if it is a non-empty string (stripped), else None."""
    value = record.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def number_field(record: dict, key: str) -> float | None:
    """record[key] if it is a number (not a bool), else None."""
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"missing folder: {path} ({what})")
    return path


def load_benchmark(name: str, root: str | Path, bad=None) -> Benchmark:
    """The benchmark `name` (a key of BENCHMARKS) from its folder `root`."""
    from retrerank.data.compositional.aro import load_aro
    from retrerank.data.compositional.sugarcrepe import load_sugarcrepe
    from retrerank.data.compositional.winoground import load_winoground

    if name == "winoground":
        return load_winoground(root, bad)
    if name == "sugarcrepe":
        return load_sugarcrepe(root, bad)
    if name in ("aro_relation", "aro_attribution"):
        return load_aro(root, name.removeprefix("aro_"), bad)
    raise ValueError(f"no compositional benchmark {name!r}; expected one of {list(BENCHMARKS)}")
