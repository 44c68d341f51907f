"""SugarCrepe (Hsieh et al. 2023) as published (github.com/RAIVNLab/sugar-crepe, data/):

    <root>/<category>.json   one file per category (CATEGORIES), a JSON object
                             {"<id>": {"filename": "<COCO val2017 file>", "caption": ..., "negative_caption": ...}}
    <root>/val2017/<filename>   the COCO 2017 validation images (val2017.zip, extracted or linked)

Each record is one item: its image, its caption (true) and its negative caption (false); its category
is its file's.
"""

from __future__ import annotations

from pathlib import Path

from retrerank.data.compositional import TRUE_FALSE, Benchmark, Builder, has_keys, require_folder, text_field
from retrerank.data.errors import BadRecords, DataError
from retrerank.data.sources.text_files import image_id_from_filename, load_json, require_file
from retrerank.data.stores.image_folder import FolderImage

# the paper's order: replace, swap, add; objects, attributes, relations
CATEGORIES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
IMAGES = "val2017"
KEYS = ("filename", "caption", "negative_caption")


def load_sugarcrepe(root: str | Path, bad: BadRecords | None = None) -> Benchmark:
    """The SugarCrepe items of `root`, category by category (see the module doc)."""
    bad = BadRecords() if bad is None else bad  # (an empty BadRecords is falsy)
    root = Path(root)
    paths = [require_file(root / f"{category}.json") for category in CATEGORIES]
    images = require_folder(root / IMAGES, "the COCO 2017 validation images")
    out = Builder("sugarcrepe", TRUE_FALSE)
    for category, path in zip(CATEGORIES, paths):
        data = load_json(path, bad)
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of records by id, each with {', '.join(KEYS)}")
        for key, record in data.items():
            where = f"{path}: record {key!r}"
            if not has_keys(record, KEYS, where, bad):
                continue
            fields = {k: text_field(record, k) for k in KEYS}
            wrong = [k for k, value in fields.items() if value is None]
            if wrong:
                bad.bad("wrong type", f"{where}: {wrong[0]!r} must be a non-empty string, got {record[wrong[0]]!r}")
                continue
            file = images / fields["filename"]
            if not file.is_file():
                bad.bad("missing image", f"{where}: image file not found: {file}")
                continue
            image = out.image(file, FolderImage(file, image_id_from_filename(file.name)))
            captions = (out.text(fields["caption"]), out.text(fields["negative_caption"]))
            out.add(f"{category}/{key}", (image,), captions, (category,))
    present = {item.categories[0] for item in out.items}
    categories = [c for c in CATEGORIES if c in present]
    return out.build(root, categories, categories)
