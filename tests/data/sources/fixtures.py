"""Writers of tiny dataset fixtures in exactly the published file formats.

Each function writes into `folder` and returns the path the loader takes; the module constants
hold what the fixtures contain, for the tests to compare against.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

# --- Karpathy split JSON -------------------------------------------------------------------------

# (cocoid, split, captions): ten images with all four split values; 4 test images for the folds.
COCO_IMAGES = [
    (57870, "train", ["A restaurant has modern wooden tables and chairs.", "A long restaurant table."]),
    (384029, "train", ["A man preparing desserts in a kitchen."]),
    (222016, "restval", ["  A big burrito cut in half.  ", "A plate of food on a table."]),
    (520950, "restval", ["A kitchen with a stove."]),
    (184613, "val", ["A child holding a flowered umbrella."]),
    (403013, "val", ["A young boy standing in front of a computer."]),
    (391895, "test", ["A man with a red helmet on a small moped.", "Man riding a motor bike."]),
    (522418, "test", ["A woman cutting a large white sheet cake."]),
    (184792, "test", ["A kitchen with wooden cabinets."]),
    (318219, "test", ["A boy with a kite.", "A child flying a kite."]),
]

FLICKR_IMAGES = [
    ("1000092795.jpg", "train", ["Two young guys with shaggy hair look at their hands.", "Two friends enjoy time."]),
    ("10002456.jpg", "val", ["Several men in hard hats are operating a pulley system."]),
    ("1000268201.jpg", "test", ["A child in a pink dress is climbing up stairs."]),
]


def _sentence(raw: str, sentid: int, imgid: int) -> dict:
    tokens = [t.strip(".,").lower() for t in raw.split()]
    return {"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid}


def karpathy_coco_data() -> dict:
    images, sentid = [], 0
    for imgid, (cocoid, split, captions) in enumerate(COCO_IMAGES):
        folder = "train2014" if split == "train" else "val2014"
        sentences = [_sentence(raw, sentid + k, imgid) for k, raw in enumerate(captions)]
        images.append(
            {
                "filepath": folder,
                "sentids": [s["sentid"] for s in sentences],
                "filename": f"COCO_{folder}_{cocoid:012d}.jpg",
                "imgid": imgid,
                "split": split,
                "sentences": sentences,
                "cocoid": cocoid,
            }
        )
        sentid += len(captions)
    return {"images": images, "dataset": "coco"}


def karpathy_flickr30k_data() -> dict:
    images, sentid = [], 0
    for imgid, (filename, split, captions) in enumerate(FLICKR_IMAGES):
        sentences = [_sentence(raw, sentid + k, imgid) for k, raw in enumerate(captions)]
        images.append(
            {
                "sentids": [s["sentid"] for s in sentences],
                "imgid": imgid,
                "sentences": sentences,
                "split": split,
                "filename": filename,
            }
        )
        sentid += len(captions)
    return {"images": images, "dataset": "flickr30k"}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")  # the published files are one JSON line
    return path


def write_karpathy_coco(folder: Path) -> Path:
    return write_json(folder / "dataset_coco.json", karpathy_coco_data())


def write_karpathy_flickr30k(folder: Path) -> Path:
    return write_json(folder / "dataset_flickr30k.json", karpathy_flickr30k_data())


# --- Multi30k (github.com/multi30k/dataset) ------------------------------------------------------

MULTI30K_TASK1_IMAGES = {
    "train": ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"],
    "val": ["1018148011.jpg", "1029450589.jpg"],
    "test_2017_mscoco": ["COCO_train2014_000000117071.jpg#367178", "COCO_val2014_000000398076.jpg#657409"],
}
MULTI30K_TASK1 = {  # (split, lang) -> captions, line by line
    ("train", "en"): [
        "Two young guys with shaggy hair look at their hands.",
        "Several men in hard hats are operating a pulley system.",
        "A little girl climbing into a wooden playhouse.",
    ],
    ("train", "de"): [
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
        "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
        "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    ],
    ("train", "fr"): [
        "Deux jeunes hommes blancs sont dehors près de buissons.",
        "Plusieurs hommes en casque font fonctionner un système de poulies.",
        "Une petite fille grimpe dans une maisonnette en bois.",
    ],
    ("train", "cs"): ["Dva mladí muži venku.", "Několik mužů v přilbách.", "Malá holčička leze do domečku."],
    ("val", "en"): ["A group of men are loading cotton onto a truck", "A man sleeping in a green room."],
    ("val", "de"): [
        "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen",
        "Ein Mann schläft in einem grünen Raum.",
    ],
    ("test_2017_mscoco", "en"): ["A man riding a wave on a surfboard.", "A cat sitting on a laptop."],
    ("test_2017_mscoco", "de"): ["Ein Mann reitet eine Welle.", "Eine Katze sitzt auf einem Laptop."],
}
MULTI30K_GZIPPED = {("train", "en"), ("train", "de"), ("test_2017_mscoco", "en")}  # the rest plain

MULTI30K_TASK2_IMAGES = {"train": ["1000092795.jpg", "10002456.jpg"], "test_2016": ["1000919630.jpg"]}


def task2_caption(split: str, index: int, lang: str, line: int) -> str:
    word = {"en": "caption", "de": "Beschreibung"}[lang]
    return f"{word} {index} of {split} image {line}"


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_multi30k(root: Path) -> Path:
    """Task 1 (train en/de/fr/cs, val en/de, test_2017_mscoco en/de) and task 2 (train, test_2016)."""
    task1 = root / "data" / "task1"
    for split, names in MULTI30K_TASK1_IMAGES.items():
        write_lines(task1 / "image_splits" / f"{split}.txt", names)
    for (split, lang), lines in MULTI30K_TASK1.items():
        write_lines(task1 / "raw" / f"{split}.{lang}", lines, gz=(split, lang) in MULTI30K_GZIPPED)
    task2 = root / "data" / "task2"
    for split, names in MULTI30K_TASK2_IMAGES.items():
        write_lines(task2 / "image_splits" / f"{split}_images.txt", names)
        for lang in ("en", "de"):
            for index in range(1, 6):
                lines = [task2_caption(split, index, lang, n) for n in range(1, len(names) + 1)]
                write_lines(task2 / "raw" / f"{split}.{index}.{lang}", lines, gz=split == "train")
    return root


# --- XTD10 (github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10) --------------------------

XTD_IMAGE_NAMES = [
    "COCO_train2014_000000000009.jpg",
    "COCO_val2014_000000391895.jpg",
    "COCO_train2014_000000522418.jpg",
]
XTD_IMAGE_IDS = ["9", "391895", "522418"]
XTD_CAPTIONS = {  # lang -> (folder in the repository, captions)
    "en": ("XTD10", ["A plate of food with broccoli.", "A man riding a moped.", "A woman cutting a cake."]),
    "es": ("XTD10", ["Un plato de comida con brócoli.", "Un hombre en moto.", "Una mujer cortando un pastel."]),
    "de": ("MIC", ["Ein Teller mit Brokkoli.", "Ein Mann auf einem Moped.", "Eine Frau schneidet einen Kuchen."]),
    "jp": ("STAIR", ["ブロッコリーの入った料理", "原付に乗る男性", "ケーキを切る女性"]),
}


def write_xtd(root: Path) -> Path:
    write_lines(root / "XTD10" / "test_image_names.txt", XTD_IMAGE_NAMES)
    for lang, (folder, lines) in XTD_CAPTIONS.items():
        write_lines(root / folder / f"test_1kcaptions_{lang}.txt", lines)
    return root


# --- Crossmodal-3600 (google.github.io/crossmodal-3600, captions.zip) ----------------------------

XM3600 = {  # image key -> lang -> captions
    "000411001ff7dd4f": {
        "en": ["A black and white dog on the grass.", "A dog lying in a garden."],
        "de": ["Ein schwarz-weißer Hund auf dem Rasen."],
        "fil": ["Isang aso sa damuhan."],
    },
    "d89a4889331ce042": {
        "en": ["A red car parked on a street."],
        "de": ["Ein rotes Auto am Straßenrand.", "Ein geparktes rotes Auto."],
        "fil": ["Isang pulang kotse."],
    },
    "74f94963ee1e135d": {
        "en": ["Two children playing football."],
        "de": ["Zwei Kinder spielen Fußball."],
        "fil": ["Dalawang batang naglalaro."],
    },
}


def xm3600_line(key: str, langs: dict[str, list[str]]) -> str:
    record: dict = {"image/key": key}
    for lang, captions in langs.items():
        tokenized = [" ".join(c.replace(".", " .").split()) for c in captions]
        record[lang] = {
            "caption": captions,
            "caption/tokenized": tokenized,
            "caption/tokenized/lowercase": [t.lower() for t in tokenized],
        }
    return json.dumps(record, ensure_ascii=False)


def write_crossmodal3600(folder: Path) -> Path:
    return write_lines(folder / "captions.jsonl", [xm3600_line(k, v) for k, v in XM3600.items()])
