"""ARO's VG-Relation and VG-Attribution (Yuksekgonul et al. 2023) as published
(github.com/mertyg/vision-language-models-are-bows, dataset_zoo/aro_datasets.py):

    <root>/visual_genome_relation.json      a JSON list of records: image_path, bbox_x, bbox_y, bbox_w,
                                            bbox_h, true_caption, false_caption, relation_name
    <root>/visual_genome_attribution.json   the same, with attributes (a list of two) for relation_name
    <root>/images/<image_path>              vgr_vga_images.zip, extracted

Each record is one item: the image cropped to its box (left bbox_x, top bbox_y, bbox_w x bbox_h pixels;
ARO crops to remove the scene around the relation), a true and a false caption. Categories as ARO
reports them: VG-Relation by relation_name, leaving out the relations in MACRO_LEFT_OUT (as ARO's own
evaluation does: for many of them the swapped caption may be true as well); VG-Attribution by the
attribute pair ("<first>_<second>"), only the pairs with at least MIN_PAIR_ITEMS items. Every item
counts in the micro accuracy, the reported categories in the macro accuracy and the per-category keys.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from retrerank.data.compositional import (
    TRUE_FALSE,
    Benchmark,
    Builder,
    has_keys,
    number_field,
    require_folder,
    slug,
    text_field,
)
from retrerank.data.errors import BadRecords, DataError
from retrerank.data.sources.text_files import load_json, require_file
from retrerank.data.stores.image_folder import FolderImage

FILES = {"relation": "visual_genome_relation.json", "attribution": "visual_genome_attribution.json"}
IMAGES = "images"
BOX = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
MIN_PAIR_ITEMS = 25  # VG-Attribution: attribute pairs with fewer items are not reported (ARO's threshold)
# VG-Relation: the relations ARO's evaluation notebook leaves out of the macro accuracy
MACRO_LEFT_OUT = frozenset(
    slug(name)
    for name in (
        "adjusting", "attached to", "between", "bigger than", "biting", "boarding", "brushing", "chewing",
        "cleaning", "climbing", "close to", "coming from", "coming out of", "contain", "crossing", "dragging",
        "draped over", "drinking", "drinking from", "driving", "driving down", "driving on", "eating from",
        "eating in", "enclosing", "exiting", "facing", "filled with", "floating in", "floating on", "flying",
        "flying above", "flying in", "flying over", "flying through", "full of", "going down", "going into",
        "going through", "grazing in", "growing in", "growing on", "guiding", "hanging from", "hanging in",
        "hanging off", "hanging over", "higher than", "holding onto", "hugging", "in between", "jumping off",
        "jumping on", "jumping over", "kept in", "larger than", "leading", "leaning over", "leaving", "licking",
        "longer than", "looking in", "looking into", "looking out", "looking over", "looking through",
        "lying next to", "lying on top of", "making", "mixed with", "mounted on", "moving", "on the back of",
        "on the edge of", "on the front of", "on the other side of", "opening", "painted on", "parked at",
        "parked beside", "parked by", "parked in", "parked in front of", "parked near", "parked next to",
        "perched on", "petting", "piled on", "playing", "playing in", "playing on", "playing with", "pouring",
        "reaching for", "reading", "reflected on", "riding on", "running in", "running on", "running through",
        "seen through", "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
        "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on",
        "smiling at", "sniffing", "splashing", "sprinkled on", "stacked on", "standing against",
        "standing around", "standing behind", "standing beside", "standing in front of", "standing near",
        "standing next to", "staring at", "stuck in", "surrounding", "swimming in", "swinging", "talking to",
        "topped with", "touching", "traveling down", "traveling on", "tying", "typing on", "underneath",
        "wading in", "waiting for", "walking across", "walking by", "walking down", "walking next to",
        "walking through", "working in", "working on", "worn on", "wrapped around", "wrapped in", "by", "of",
        "near", "next to", "with", "beside", "on the side of", "around",
    )
)  # fmt: skip


class CroppedImage(FolderImage):
    """An image file cropped to a box (left, top, right, bottom) in pixels when decoded."""

    __slots__ = ("box",)

    def __init__(self, path: str | Path, image_id: str, box: tuple[float, float, float, float]):
        super().__init__(path, image_id)
        self.box = tuple(box)

    def __reduce__(self):
        return CroppedImage, (str(self.path), self.image_id, self.box)

    def open(self, size: int | None = None):
        from PIL import Image

        image = super().open().crop(self.box)  # PIL pads a box reaching past the border with black, as in ARO
        return image.resize((size, size), Image.Resampling.BICUBIC) if size else image


def load_aro(root: str | Path, variant: str, bad: BadRecords | None = None) -> Benchmark:
    """VG-Relation (variant "relation") or VG-Attribution ("attribution") from `root` (see the module doc)."""
    if variant not in FILES:
        raise ValueError(f"no ARO variant {variant!r}; expected one of {list(FILES)}")
    bad = BadRecords() if bad is None else bad  # (an empty BadRecords is falsy)
    root = Path(root)
    path = require_file(root / FILES[variant])
    images = require_folder(root / IMAGES, "ARO's vgr_vga_images.zip, extracted")
    label = "relation_name" if variant == "relation" else "attributes"
    keys = ("image_path", *BOX, "true_caption", "false_caption", label)
    data = load_json(path, bad)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, each with {', '.join(keys)}")
    out = Builder(f"aro_{variant}", TRUE_FALSE)
    for number, record in enumerate(data):
        where = f"{path}: record {number}"
        if not has_keys(record, keys, where, bad):
            continue
        texts = {key: text_field(record, key) for key in ("image_path", "true_caption", "false_caption")}
        wrong = [key for key, value in texts.items() if value is None]
        if wrong:
            bad.bad("wrong type", f"{where}: {wrong[0]!r} must be a non-empty string, got {record[wrong[0]]!r}")
            continue
        box = [number_field(record, key) for key in BOX]
        if any(v is None for v in box) or box[2] <= 0 or box[3] <= 0:
            shown = ", ".join(f"{key}={record[key]!r}" for key in BOX)
            bad.bad("bad box", f"{where}: the box must be numbers with bbox_w, bbox_h > 0, got {shown}")
            continue
        category = _category(record, label)
        if category is None:
            what = "a non-empty string" if label == "relation_name" else "a list of two non-empty strings"
            bad.bad("wrong type", f"{where}: {label!r} must be {what}, got {record[label]!r}")
            continue
        file = images / texts["image_path"]
        if not file.is_file():
            bad.bad("missing image", f"{where}: image file not found: {file}")
            continue
        x, y, w, h = box
        crop = (x, y, x + w, y + h)
        image_id = f"{Path(texts['image_path']).stem}@{x:g},{y:g},{w:g},{h:g}"
        image = out.image((file, crop), CroppedImage(file, image_id, crop))
        captions = (out.text(texts["true_caption"]), out.text(texts["false_caption"]))
        out.add(str(number), (image,), captions, (category,))
    counts = Counter(item.categories[0] for item in out.items)
    if variant == "relation":
        reported = sorted(c for c in counts if c not in MACRO_LEFT_OUT)
    else:
        reported = sorted(c for c, n in counts.items() if n >= MIN_PAIR_ITEMS)
    return out.build(path, reported, reported)


def _category(record: dict, label: str) -> str | None:
    """The record's category as a metric-name part, or None where its field is malformed."""
    value = record[label]
    if label == "relation_name":
        name = text_field(record, label)
        return slug(name) if name and slug(name) else None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v.strip() for v in value)):
        return None
    return slug(f"{value[0]}_{value[1]}") or None
