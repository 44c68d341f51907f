"""XTD10 in the repository layout (XTD10/, MIC/, STAIR/) and flat, and broken inputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.xtd import available_languages, load_xtd
from tests.data.sources.fixtures import XTD_CAPTIONS, XTD_IMAGE_IDS, write_lines, write_xtd


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_xtd(tmp_path / "Cross-lingual-Test-Dataset-XTD10")


def test_all_languages_from_the_three_folders(root: Path) -> None:
    assert available_languages(root) == ["de", "en", "es", "jp"]
    records = load_xtd(root)
    assert len(records) == 4 * 3
    for lang, (_, lines) in XTD_CAPTIONS.items():
        mine = [r for r in records if r.lang == lang]
        assert [r.text for r in mine] == lines
        assert [r.image_id for r in mine] == XTD_IMAGE_IDS  # COCO numbers without zero padding
    assert records[0] == CaptionRecord("xtd10.de.1", "9", "Ein Teller mit Brokkoli.", "de")


def test_chosen_languages_in_order(root: Path) -> None:
    records = load_xtd(root, langs=["jp", "es"])
    assert [r.caption_id for r in records] == [
        "xtd10.jp.1",
        "xtd10.jp.2",
        "xtd10.jp.3",
        "xtd10.es.1",
        "xtd10.es.2",
        "xtd10.es.3",
    ]


def test_flat_folder_and_2017_style_names(tmp_path: Path) -> None:
    write_lines(tmp_path / "test_image_names.txt", ["000000000009.jpg", "000000391895.jpg"])
    write_lines(tmp_path / "test_1kcaptions_en.txt", ["a plate", " a moped "])
    assert load_xtd(tmp_path) == [
        CaptionRecord("xtd10.en.1", "9", "a plate", "en"),
        CaptionRecord("xtd10.en.2", "391895", "a moped", "en"),
    ]


def test_missing_files_are_named(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"missing file: {root / 'test_1kcaptions_ko.txt'}")):
        load_xtd(root, langs=["ko"], bad=BadRecords(strict=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(f"missing file: {empty / 'test_image_names.txt'}")):
        load_xtd(empty)
    write_lines(empty / "test_image_names.txt", ["000000000009.jpg"])
    with pytest.raises(DataError, match="no test_1kcaptions_<lang>.txt under"):
        load_xtd(empty)


def test_line_count_mismatch_raises_or_skips_the_language(root: Path) -> None:
    path = write_lines(root / "XTD10" / "test_1kcaptions_es.txt", ["uno", "dos"])
    names = root / "XTD10" / "test_image_names.txt"
    expected = f"{path} has 2 lines but {names} has 3"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_xtd(root)
    bad = BadRecords(strict=False)
    records = load_xtd(root, bad=bad)
    assert bad.counts == {"line-count mismatch": 1} and expected in bad.examples[0]
    assert {r.lang for r in records} == {"de", "en", "jp"}


def test_empty_caption_and_non_utf8_name_file_and_line(root: Path) -> None:
    es = write_lines(root / "XTD10" / "test_1kcaptions_es.txt", ["uno", "", "tres"])
    with pytest.raises(DataError, match=re.escape(f"{es}:2: empty caption (image 391895)")):
        load_xtd(root, langs=["es"])
    de = root / "MIC" / "test_1kcaptions_de.txt"
    de.write_bytes(b"eins\nzwei\ndr\xfci\n")
    with pytest.raises(DataError, match=re.escape(f"{de}:3: not valid UTF-8")):
        load_xtd(root, langs=["de"])
    bad = BadRecords(strict=False)
    records = load_xtd(root, langs=["es", "de"], bad=bad)
    assert bad.counts == {"empty caption": 1, "non-utf8": 1}
    assert [r.caption_id for r in records] == ["xtd10.es.1", "xtd10.es.3", "xtd10.de.1", "xtd10.de.2"]
