"""The on-disk cache: `<root>/synthetic/<hash of the config>/`, one npz + one jsonl per split.

`<split>.npz` holds features [sum R, D] and boxes [sum R, 4] of all images concatenated,
offsets [N + 1] into them, image_ids [N], pixels [N, S, S, 3] uint8 (S: image_size; records
hold views of it) and near [N] (each image's near-duplicate ids joined by ",", "" for none);
`<split>.captions.jsonl` one CaptionRecord a line (`also`, the ids of the other
images the caption is true of, and `foils`, as lists; lines without them read as ()); config.json the config,
for humans. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from retrerank.config import SyntheticConfig
from retrerank.data.errors import DataError
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.data.synthetic.generate import SPLITS, check_config, generate_synthetic
from retrerank.io import atomic_file, write_json_atomic, write_text_atomic

# Bump whenever the generated data changes for the same config (the generator's code or its
# fixed constants in scenes.py, captions.py, language.py, paint.py): it is part of the cache key.
# 2: pixels (features, boxes and captions as in 1); 3: exact relevance (CaptionRecord.also);
# 4: near-duplicates (ImageRecord.near); 5: foils (CaptionRecord.foils; the rest as in 4)
_FORMAT_VERSION = 5


def cache_dir(cfg: SyntheticConfig, root: str | Path) -> Path:
    """`<root>/synthetic/<hash>`: the hash covers every config field and the generator version."""
    fields = {"format": _FORMAT_VERSION, **dataclasses.asdict(cfg)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "synthetic" / digest


def _files(name: str) -> tuple[str, str]:
    return f"{name}.npz", f"{name}.captions.jsonl"


def _write_split(folder: Path, split: RetrievalSplit, cfg: SyntheticConfig) -> None:
    arrays, captions = _files(split.name)
    counts = [len(im.features) for im in split.images]
    with atomic_file(folder / arrays) as f:
        np.savez(
            f,
            features=np.concatenate(
                [im.features for im in split.images] or [np.zeros((0, cfg.feature_dim), np.float32)]
            ),
            boxes=np.concatenate([im.boxes for im in split.images] or [np.zeros((0, 4), np.float32)]),
            offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
            image_ids=np.array([im.image_id for im in split.images], dtype=str),
            pixels=np.stack([im.pixels for im in split.images])
            if split.images
            else np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8),
            near=np.array([",".join(im.near) for im in split.images], dtype=str),
        )
    lines = (json.dumps(dataclasses.asdict(c), ensure_ascii=False) + "\n" for c in split.captions)
    write_text_atomic(folder / captions, "".join(lines))


def _read_split(folder: Path, name: str) -> RetrievalSplit:
    arrays, captions = _files(name)
    path = folder / arrays
    try:
        with np.load(path) as data:
            features, boxes, offsets, ids = data["features"], data["boxes"], data["offsets"], data["image_ids"]
            pixels, near = data["pixels"], data["near"]
        if len(pixels) != len(ids) or len(near) != len(ids):
            raise ValueError(f"{len(pixels)} pictures and {len(near)} near-duplicate lists for {len(ids)} images")
        images = [
            ImageRecord(
                str(ids[i]),
                features[offsets[i] : offsets[i + 1]],
                boxes[offsets[i] : offsets[i + 1]],
                pixels[i],
                tuple(str(near[i]).split(",")) if near[i] else (),
            )
            for i in range(len(ids))
        ]
        path = folder / captions
        with path.open(encoding="utf-8") as f:
            records = [_caption(json.loads(line)) for line in f]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise DataError(f"corrupt synthetic cache file {path}: {err}; delete {folder} to regenerate") from None
    return RetrievalSplit(name, images, records)


def _caption(fields: dict) -> CaptionRecord:
    for key in ("also", "foils"):  # json's lists back to the record's (hashable) tuples
        fields[key] = tuple(fields.get(key, ()))
    return CaptionRecord(**fields)


def ensure_synthetic(cfg: SyntheticConfig, root: str | Path) -> Path:
    """Generate the dataset into its cache folder unless it is already there; return the folder."""
    check_config(cfg)
    folder = cache_dir(cfg, root)
    if all((folder / f).is_file() for name in SPLITS for f in _files(name)):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    splits = generate_synthetic(cfg)
    for split in splits.values():
        _write_split(folder, split, cfg)
    write_json_atomic(folder / "config.json", dataclasses.asdict(cfg))  # for humans: what this folder holds
    return folder


def load_synthetic(cfg: SyntheticConfig, root: str | Path) -> dict[str, RetrievalSplit]:
    """The splits "train", "val", "test", "novel" (captions in every language), generated on first use."""
    folder = ensure_synthetic(cfg, root)
    return {name: _read_split(folder, name) for name in SPLITS}
