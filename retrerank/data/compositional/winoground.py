"""Winoground (Thrush et al. 2022) as published (huggingface.co/datasets/facebook/winoground, data/):

    <root>/examples.jsonl   one JSON object per line: id, image_0, image_1, caption_0, caption_1, tag,
                            secondary_tag, num_main_preds, collapsed_tag
    <root>/images/<image_0>.png, <image_1>.png   (data/images.zip, extracted)

caption_0 is true of image_0 and caption_1 of image_1. Each item is in two categories: its
collapsed_tag (Object, Relation or Both: what the two captions swap) as "object", "relation", "both",
and its number of main predicates as "main_preds_1" or "main_preds_2", the two splits the paper reports.
"""

from __future__ import annotations

from pathlib import Path

from retrerank.data.compositional import PAIR_OF_PAIRS, Benchmark, Builder, has_keys, require_folder, slug, text_field
from retrerank.data.errors import BadRecords
from retrerank.data.sources.text_files import iter_json_lines, require_file
from retrerank.data.stores.image_folder import FolderImage

EXAMPLES = "examples.jsonl"
IMAGES = "images"
TAG_ORDER = ("object", "relation", "both")  # the paper's order of the collapsed tags
KEYS = ("id", "image_0", "image_1", "caption_0", "caption_1", "collapsed_tag", "num_main_preds")


def load_winoground(root: str | Path, bad: BadRecords | None = None) -> Benchmark:
    """The Winoground items of `root` (see the module doc)."""
    bad = BadRecords() if bad is None else bad  # (an empty BadRecords is falsy)
    root = Path(root)
    path = require_file(root / EXAMPLES)
    images = require_folder(root / IMAGES, "Winoground's images.zip, extracted")
    out = Builder("winoground", PAIR_OF_PAIRS)
    tags, preds = [], set()
    for line, record in iter_json_lines(path, bad):
        where = f"{path}:{line}"
        if not has_keys(record, KEYS, where, bad, "a Winoground example"):
            continue
        fields = {key: text_field(record, key) for key in ("image_0", "image_1", "caption_0", "caption_1")}
        fields["collapsed_tag"] = text_field(record, "collapsed_tag")
        wrong = [key for key, value in fields.items() if value is None]
        if wrong:
            bad.bad("wrong type", f"{where}: {wrong[0]!r} must be a non-empty string, got {record[wrong[0]]!r}")
            continue
        n = record["num_main_preds"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            bad.bad("wrong type", f"{where}: 'num_main_preds' must be a whole number >= 1, got {n!r}")
            continue
        files = [images / f"{fields[key]}.png" for key in ("image_0", "image_1")]
        absent = [(key, file) for key, file in zip(("image_0", "image_1"), files) if not file.is_file()]
        if absent:
            key, file = absent[0]
            bad.bad("missing image", f"{where}: {key} {fields[key]!r}: image file not found: {file}")
            continue
        rows = tuple(out.image(file, FolderImage(file, file.stem)) for file in files)
        captions = (out.text(fields["caption_0"]), out.text(fields["caption_1"]))
        tag = slug(fields["collapsed_tag"])
        tags.append(tag)
        preds.add(n)
        out.add(str(record["id"]), rows, captions, (tag, f"main_preds_{n}"))
    order = [t for t in TAG_ORDER if t in tags] + sorted(set(tags) - set(TAG_ORDER))
    return out.build(path, order + [f"main_preds_{n}" for n in sorted(preds)])
