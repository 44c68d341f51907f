"""Karpathy split JSON: ids, splits, restval, the COCO 1k folds, and each kind of broken input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.karpathy import karpathy_folds, load_karpathy
from tests.data.sources.fixtures import (
    COCO_IMAGES,
    karpathy_coco_data,
    karpathy_flickr30k_data,
    write_json,
    write_karpathy_coco,
    write_karpathy_flickr30k,
)


def image_ids(records: list[CaptionRecord]) -> list[str]:
    return list(dict.fromkeys(r.image_id for r in records))


def test_coco_splits_ids_and_restval_merge(tmp_path: Path) -> None:
    splits = load_karpathy(write_karpathy_coco(tmp_path))
    assert set(splits) == {"train", "val", "test"}
    assert image_ids(splits["train"]) == ["57870", "384029", "222016", "520950"]
    assert image_ids(splits["val"]) == ["184613", "403013"]
    assert image_ids(splits["test"]) == ["391895", "522418", "184792", "318219"]
    # caption ids are the sentids, numbered through the file; texts are stripped
    assert [r.caption_id for r in splits["train"]] == ["0", "1", "2", "3", "4", "5"]
    assert splits["train"][3] == CaptionRecord("3", "222016", "A big burrito cut in half.", "en")
    assert all(r.lang == "en" for split in splits.values() for r in split)
    assert sum(len(s) for s in splits.values()) == sum(len(c) for _, _, c in COCO_IMAGES)


def test_restval_kept_apart_when_not_merged(tmp_path: Path) -> None:
    splits = load_karpathy(write_karpathy_coco(tmp_path), restval=False)
    assert image_ids(splits["train"]) == ["57870", "384029"]
    assert image_ids(splits["restval"]) == ["222016", "520950"]
    assert [r.text for r in splits["restval"]] == [
        "A big burrito cut in half.",
        "A plate of food on a table.",
        "A kitchen with a stove.",
    ]


def test_flickr30k_image_id_is_the_file_stem(tmp_path: Path) -> None:
    splits = load_karpathy(write_karpathy_flickr30k(tmp_path))
    assert image_ids(splits["train"]) == ["1000092795"]
    assert image_ids(splits["val"]) == ["10002456"]
    assert splits["test"] == [CaptionRecord("3", "1000268201", "A child in a pink dress is climbing up stairs.")]
    assert [r.caption_id for r in splits["train"]] == ["0", "1"]


def test_folds_cut_test_images_in_file_order(tmp_path: Path) -> None:
    test = load_karpathy(write_karpathy_coco(tmp_path))["test"]
    folds = karpathy_folds(test, fold_images=2)
    assert [image_ids(fold) for fold in folds] == [["391895", "522418"], ["184792", "318219"]]
    assert [[r.caption_id for r in fold] for fold in folds] == [["8", "9", "10"], ["11", "12", "13"]]
    assert [r for fold in folds for r in fold] == test


def test_folds_need_a_whole_number_of_folds(tmp_path: Path) -> None:
    test = load_karpathy(write_karpathy_coco(tmp_path))["test"]
    with pytest.raises(DataError, match="4 images do not split into folds of 3 images"):
        karpathy_folds(test, fold_images=3)
    with pytest.raises(DataError, match="4 images do not split into folds of 1000 images"):
        karpathy_folds(test)
    with pytest.raises(DataError, match="0 images"):
        karpathy_folds([], fold_images=1)


def test_coco_five_thousand_image_protocol_gives_five_folds() -> None:
    captions = [CaptionRecord(f"{i}.{k}", str(i), "x") for i in range(5000) for k in range(5)]
    folds = karpathy_folds(captions)
    assert [len(fold) for fold in folds] == [5000] * 5
    assert folds[1][0].image_id == "1000" and folds[4][-1].image_id == "4999"


def _empty_caption(data: dict) -> None:
    data["images"][4]["sentences"][0]["raw"] = "   "


def _duplicate_sentid(data: dict) -> None:
    data["images"][7]["sentences"][0]["sentid"] = 0


def _unknown_split(data: dict) -> None:
    data["images"][5]["split"] = "dev"


def _missing_cocoid(data: dict) -> None:
    del data["images"][1]["cocoid"]


def _duplicate_image(data: dict) -> None:
    data["images"][9]["cocoid"] = 391895


BAD_CASES = [
    (_empty_caption, "empty caption", r"images\[4\] \(image 184613\): sentid 6 has an empty caption", 1),
    (
        _duplicate_sentid,
        "duplicate caption id",
        r"images\[7\] \(image 522418\): sentid 0 already used in images\[0\]",
        1,
    ),
    (_unknown_split, "unknown split", r"images\[5\]: split 'dev' is not one of", 1),
    (_missing_cocoid, "malformed record", r"images\[1\]: no integer 'cocoid'", 1),
    (_duplicate_image, "duplicate image id", r"images\[9\]: image 391895 already at images\[6\]", 2),
]


@pytest.mark.parametrize("mutate, reason, message, lost", BAD_CASES, ids=[c[1] for c in BAD_CASES])
def test_bad_records_raise_or_are_counted(
    tmp_path: Path, mutate: Callable[[dict], None], reason: str, message: str, lost: int
) -> None:
    data = karpathy_coco_data()
    mutate(data)
    path = write_json(tmp_path / "dataset_coco.json", data)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        load_karpathy(path)
    bad = BadRecords(strict=False)
    splits = load_karpathy(path, bad=bad)
    assert bad.counts == {reason: 1}
    assert re.search(message, bad.examples[0])
    total = sum(len(c) for _, _, c in COCO_IMAGES)
    assert sum(len(s) for s in splits.values()) == total - lost  # only the broken record is lost


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    text = json.dumps(karpathy_coco_data(), indent=1)
    path = tmp_path / "dataset_coco.json"
    path.write_text(text.replace('"split": "val"', '"split" "val"', 1))
    line = text[: text.index('"split": "val"')].count("\n") + 1
    for bad in (None, BadRecords(strict=False)):  # a broken document cannot be skipped
        with pytest.raises(DataError, match=re.escape(f"{path}:{line}:") + r"\d+: malformed JSON"):
            load_karpathy(path, bad=bad)


def test_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    text = json.dumps(karpathy_coco_data(), indent=1, ensure_ascii=False)
    path = tmp_path / "dataset_coco.json"
    path.write_bytes(text.replace("moped", "mop\xe9d").encode("latin-1"))
    line = text[: text.index("moped")].count("\n") + 1
    with pytest.raises(DataError, match=re.escape(f"{path}:{line}: not valid UTF-8")):
        load_karpathy(path)


def test_lenient_skips_and_counts_only_the_records_that_are_not_utf8(tmp_path: Path) -> None:
    """The published files are one JSON line: one bad byte must not cost the whole file in lenient mode."""
    data = karpathy_flickr30k_data()
    data["images"][0]["sentences"][1]["raw"] = "Two friends enjoy \udce9 time."  # a lone Latin-1 byte
    data["images"][2]["filename"] = "100026820\udce9.jpg"
    path = tmp_path / "dataset_flickr30k.json"
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=re.escape(f"{path}:1: not valid UTF-8 (byte offset")):
        load_karpathy(path)  # strict: the file and where the byte is
    bad = BadRecords(strict=False)
    splits = load_karpathy(path, bad=bad)
    assert bad.counts == {"non-utf8": 2}
    assert bad.examples == [
        f"{path}: images[0] (image 1000092795): sentid 1: caption is not valid UTF-8",
        f"{path}: images[2]: 'filename' is not valid UTF-8",
    ]
    assert [r.text for r in splits["train"]] == ["Two young guys with shaggy hair look at their hands."]
    assert image_ids(splits["val"]) == ["10002456"] and splits["test"] == []


def test_missing_file_and_wrong_document_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "dataset_coco.json"
    for bad in (None, BadRecords(strict=False)):
        with pytest.raises(DataError, match=re.escape(f"missing file: {missing}")):
            load_karpathy(missing, bad=bad)
    path = write_json(tmp_path / "other.json", {"annotations": []})
    with pytest.raises(DataError, match=re.escape(f"{path}: not a Karpathy split file")):
        load_karpathy(path)
