"""Multi30k task 1 and task 2 in the repository layout, plain and gzipped, and broken inputs."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.multi30k import available_languages, available_splits, load_multi30k
from tests.data.sources.fixtures import (
    MULTI30K_TASK1,
    MULTI30K_TASK2_IMAGES,
    task2_caption,
    write_lines,
    write_multi30k,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_multi30k(tmp_path / "multi30k-dataset")


def test_task1_discovers_splits_and_their_languages(root: Path) -> None:
    assert available_splits(root) == ["test_2017_mscoco", "train", "val"]
    assert available_languages(root, 1, "train") == ["en", "de", "fr", "cs"]
    assert available_languages(root, 1, "val") == ["en", "de"]
    splits = load_multi30k(root)
    assert {split: sorted({r.lang for r in records}) for split, records in splits.items()} == {
        "train": ["cs", "de", "en", "fr"],
        "val": ["de", "en"],
        "test_2017_mscoco": ["de", "en"],
    }
    for (split, lang), lines in MULTI30K_TASK1.items():  # gzipped and plain files alike
        assert [r.text for r in splits[split] if r.lang == lang] == lines


def test_task1_ids_follow_the_image_list(root: Path) -> None:
    train = load_multi30k(root, langs=["en", "de"], splits=["train"])["train"]
    assert train[0] == CaptionRecord("train.en.1", "1000092795", MULTI30K_TASK1[("train", "en")][0], "en")
    assert [(r.caption_id, r.image_id) for r in train if r.lang == "de"] == [
        ("train.de.1", "1000092795"),
        ("train.de.2", "10002456"),
        ("train.de.3", "1000268201"),
    ]
    # the COCO test set lists "<file>#<caption id>": the id is the COCO number, as in COCO region stores
    coco = load_multi30k(root, langs=["en"], splits=["test_2017_mscoco"])["test_2017_mscoco"]
    assert [(r.caption_id, r.image_id) for r in coco] == [
        ("test_2017_mscoco.en.1", "117071"),
        ("test_2017_mscoco.en.2", "398076"),
    ]


def test_requested_languages_limit_discovered_splits(root: Path) -> None:
    assert {s: len(r) for s, r in load_multi30k(root, langs=["fr"]).items()} == {"train": 3}
    with pytest.raises(DataError, match=r"no Multi30k task 1 captions in \['sw'\]"):
        load_multi30k(root, langs=["sw"])


def test_named_split_without_the_language_names_the_missing_file(root: Path) -> None:
    missing = root / "data" / "task1" / "raw" / "val.fr"
    with pytest.raises(DataError, match=re.escape(f"missing file: {missing} (nor val.fr.gz)")):
        load_multi30k(root, langs=["fr"], splits=["val"], bad=BadRecords(strict=False))
    image_list = root / "data" / "task1" / "image_splits" / "test_2016_flickr.txt"
    with pytest.raises(DataError, match=re.escape(f"missing file: {image_list}")):
        load_multi30k(root, splits=["test_2016_flickr"], langs=["en"])
    with pytest.raises(DataError, match="no caption files for split 'test_2016_flickr'"):
        load_multi30k(root, splits=["test_2016_flickr"])


def test_task2_five_captions_per_image_and_language(root: Path) -> None:
    assert available_splits(root, task=2) == ["test_2016", "train"]
    splits = load_multi30k(root, task=2)
    train = splits["train"]
    assert len(train) == 2 * 5 * 2
    by_id = {r.caption_id: r for r in train}
    assert by_id["train.3.de.2"] == CaptionRecord("train.3.de.2", "10002456", task2_caption("train", 3, "de", 2), "de")
    assert sorted(r.caption_id for r in train if r.image_id == "1000092795" and r.lang == "en") == [
        f"train.{i}.en.1" for i in range(1, 6)
    ]
    assert [r.image_id for r in splits["test_2016"]] == ["1000919630"] * 10
    assert len(MULTI30K_TASK2_IMAGES["test_2016"]) == 1


def _raw(root: Path, name: str) -> Path:
    return root / "data" / "task1" / "raw" / name


def test_line_count_mismatch_raises_or_skips_the_file(root: Path) -> None:
    path = write_lines(_raw(root, "val.en"), ["one", "two", "three"])
    image_list = root / "data" / "task1" / "image_splits" / "val.txt"
    expected = f"{path} has 3 lines but {image_list} has 2"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_multi30k(root, splits=["val"])
    bad = BadRecords(strict=False)
    val = load_multi30k(root, splits=["val"], langs=["en", "de"], bad=bad)["val"]
    assert bad.counts == {"line-count mismatch": 1} and expected in bad.examples[0]
    assert {r.lang for r in val} == {"de"} and len(val) == 2  # the misaligned file is left out whole


def test_empty_caption_names_file_and_line(root: Path) -> None:
    path = write_lines(_raw(root, "val.de"), ["Eine Gruppe von Männern", "   "])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: empty caption (image 1029450589)")):
        load_multi30k(root, splits=["val"])
    bad = BadRecords(strict=False)
    val = load_multi30k(root, splits=["val"], bad=bad)["val"]
    assert bad.counts == {"empty caption": 1}
    assert [r.caption_id for r in val] == ["val.en.1", "val.en.2", "val.de.1"]


def test_non_utf8_line_in_gzipped_file_names_file_and_line(root: Path) -> None:
    path = _raw(root, "train.en.gz")
    with gzip.open(path, "wb") as f:
        f.write(b"Two young guys.\nSeveral men in hard hats \xe9 pulley.\nA little girl.\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not valid UTF-8")):
        load_multi30k(root, splits=["train"], langs=["en"])
    bad = BadRecords(strict=False)
    train = load_multi30k(root, splits=["train"], langs=["en"], bad=bad)["train"]
    assert bad.counts == {"non-utf8": 1}
    # the broken line is skipped without shifting the others against the image list
    assert [(r.caption_id, r.image_id) for r in train] == [("train.en.1", "1000092795"), ("train.en.3", "1000268201")]


def test_plain_file_wins_over_gz_and_both_read_the_same(root: Path) -> None:
    gz_text = [r.text for r in load_multi30k(root, splits=["train"], langs=["en"])["train"]]
    write_lines(_raw(root, "train.en"), [t.upper() for t in gz_text])
    plain = load_multi30k(root, splits=["train"], langs=["en"])["train"]
    assert [r.text for r in plain] == [t.upper() for t in gz_text]


def test_task_must_be_one_or_two(root: Path) -> None:
    with pytest.raises(ValueError, match="task must be 1 or 2, got 3"):
        load_multi30k(root, task=3)
