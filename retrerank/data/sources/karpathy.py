"""Karpathy split files (dataset_coco.json, dataset_flickr30k.json, dataset_flickr8k.json).

Published format (cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip):
{"images": [{"filename", "imgid", "split": "train|restval|val|test", "sentids",
"sentences": [{"raw", "tokens", "sentid", "imgid"}], COCO only: "cocoid", "filepath"}],
"dataset": "coco" | "flickr30k" | "flickr8k"}.
Image ids follow the bottom-up-attention TSVs: COCO by str(cocoid), Flickr by the file stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.text_files import image_id_from_filename, is_utf8, load_json

SPLITS = ("train", "restval", "val", "test")


def _image_id(image: dict[str, Any], coco: bool) -> str | None:
    if coco:
        cocoid = image.get("cocoid")
        return str(cocoid) if isinstance(cocoid, int) and not isinstance(cocoid, bool) else None
    filename = image.get("filename")
    return image_id_from_filename(filename) if isinstance(filename, str) and filename.strip() else None


def load_karpathy(
    path: str | Path, restval: bool = True, bad: BadRecords | None = None
) -> dict[str, list[CaptionRecord]]:
    """Captions by split, in file order: keys "train", "val", "test".

    restval=True merges the "restval" images into "train" (the usual 113k COCO training set);
    restval=False keeps them apart under an extra "restval" key.
    """
    bad = bad if bad is not None else BadRecords()  # BadRecords is falsy until it has counted
    path = Path(path)
    data = load_json(path, bad)  # lenient: captions with bytes that are not UTF-8 are skipped below
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a Karpathy split file (no top-level 'images' list)")
    coco = data.get("dataset") == "coco"
    out: dict[str, list[CaptionRecord]] = {"train": [], "val": [], "test": []}
    if not restval:
        out["restval"] = []
    image_at: dict[str, int] = {}  # image id -> index in "images", for duplicate messages
    caption_at: dict[str, int] = {}  # sentid -> index in "images"
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(image, dict):
            bad.bad("malformed record", f"{where}: not a JSON object")
            continue
        split = image.get("split")
        if split not in SPLITS:
            bad.bad("unknown split", f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        image_id = _image_id(image, coco)
        if image_id is None:
            key = "integer 'cocoid'" if coco else "'filename'"
            bad.bad("malformed record", f"{where}: no {key}")
            continue
        if not is_utf8(image_id):
            bad.bad("non-utf8", f"{where}: 'filename' is not valid UTF-8")
            continue
        if image_id in image_at:
            bad.bad("duplicate image id", f"{where}: image {image_id} already at images[{image_at[image_id]}]")
            continue
        image_at[image_id] = i
        sentences = image.get("sentences")
        if not isinstance(sentences, list):
            bad.bad("malformed record", f"{where} (image {image_id}): has no 'sentences' list")
            continue
        target = out["train" if split == "restval" and restval else split]
        for j, sentence in enumerate(sentences):
            sentid = sentence.get("sentid") if isinstance(sentence, dict) else None
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if sentid is None or not isinstance(raw, str):
                bad.bad(
                    "malformed record", f"{where} (image {image_id}) sentences[{j}]: needs 'sentid' and a string 'raw'"
                )
                continue
            if not is_utf8(raw):
                bad.bad("non-utf8", f"{where} (image {image_id}): sentid {sentid}: caption is not valid UTF-8")
                continue
            caption_id = str(sentid)
            if caption_id in caption_at:
                bad.bad(
                    "duplicate caption id",
                    f"{where} (image {image_id}): sentid {sentid} already used in images[{caption_at[caption_id]}]",
                )
                continue
            text = raw.strip()
            if not text:
                bad.bad("empty caption", f"{where} (image {image_id}): sentid {sentid} has an empty caption")
                continue
            caption_at[caption_id] = i
            target.append(CaptionRecord(caption_id, image_id, text, "en"))
    return out


def karpathy_folds(captions: list[CaptionRecord], fold_images: int = 1000) -> list[list[CaptionRecord]]:
    """The COCO 1k protocol: the test images in order, cut into consecutive folds of `fold_images`.

    With the 5k Karpathy test split this gives the five 1k folds whose recalls are averaged.
    Each fold keeps its images' captions in their original order.
    """
    order = list(dict.fromkeys(c.image_id for c in captions))  # images by first appearance
    if fold_images <= 0 or not order or len(order) % fold_images:
        raise DataError(f"{len(order)} images do not split into folds of {fold_images} images")
    fold_of = {image_id: k // fold_images for k, image_id in enumerate(order)}
    folds: list[list[CaptionRecord]] = [[] for _ in range(len(order) // fold_images)]
    for caption in captions:
        folds[fold_of[caption.image_id]].append(caption)
    return folds
