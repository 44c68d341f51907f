"""Crossmodal-3600 captions.jsonl: records, languages, and each kind of broken line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.crossmodal3600 import available_languages, load_crossmodal3600
from tests.data.sources.fixtures import XM3600, write_crossmodal3600, write_lines, xm3600_line

KEYS = list(XM3600)
TOTAL = sum(len(c) for langs in XM3600.values() for c in langs.values())


def test_every_language_of_every_image(tmp_path: Path) -> None:
    path = write_crossmodal3600(tmp_path)
    assert available_languages(path) == ["de", "en", "fil"]
    records = load_crossmodal3600(path)
    assert len(records) == TOTAL
    assert records[:3] == [
        CaptionRecord("000411001ff7dd4f.en.0", "000411001ff7dd4f", "A black and white dog on the grass.", "en"),
        CaptionRecord("000411001ff7dd4f.en.1", "000411001ff7dd4f", "A dog lying in a garden.", "en"),
        CaptionRecord("000411001ff7dd4f.de.0", "000411001ff7dd4f", "Ein schwarz-weißer Hund auf dem Rasen.", "de"),
    ]
    assert list(dict.fromkeys(r.image_id for r in records)) == KEYS


def test_chosen_languages(tmp_path: Path) -> None:
    records = load_crossmodal3600(write_crossmodal3600(tmp_path), langs=["de"])
    assert [r.caption_id for r in records] == [
        "000411001ff7dd4f.de.0",
        "d89a4889331ce042.de.0",
        "d89a4889331ce042.de.1",
        "74f94963ee1e135d.de.0",
    ]
    assert {r.lang for r in records} == {"de"}


def _lines(*replacements: tuple[int, str]) -> list[str]:
    lines = [xm3600_line(k, v) for k, v in XM3600.items()]
    for index, line in replacements:
        lines[index] = line
    return lines


CASES = [  # (line 2 replaced by, reason, message after "{path}:", captions lost)
    ('{"image/key": "d89a4889331ce042", "en": {"caption": ["x"]', "malformed json", r"2:\d+: malformed JSON", 4),
    (
        xm3600_line("d89a4889331ce042", {"en": ["A red car."], "de": [" "]}),
        "empty caption",
        "2: image d89a4889331ce042 de caption 0 is empty",
        3,
    ),
    (
        xm3600_line("000411001ff7dd4f", {"en": ["again"]}),
        "duplicate caption id",
        "2: image 000411001ff7dd4f already on line 1",
        4,
    ),
    ('{"en": {"caption": ["no key"]}}', "malformed record", "2: no 'image/key' string", 4),
]


@pytest.mark.parametrize("line, reason, message, lost", CASES, ids=[c[1] for c in CASES])
def test_broken_lines_raise_or_are_counted(tmp_path: Path, line: str, reason: str, message: str, lost: int) -> None:
    path = write_lines(tmp_path / "captions.jsonl", _lines((1, line)))
    with pytest.raises(DataError, match=re.escape(f"{path}:") + message):
        load_crossmodal3600(path)
    bad = BadRecords(strict=False)
    records = load_crossmodal3600(path, bad=bad)
    assert bad.counts == {reason: 1} and re.search(message, bad.examples[0])
    kept = len([r for r in records if r.image_id != "d89a4889331ce042"])
    assert kept == TOTAL - 4 and len(records) == TOTAL - lost  # only the broken line or caption is lost


def test_non_utf8_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    lines = _lines()
    path.write_bytes((lines[0] + "\n" + lines[1] + "\n").encode() + b'{"image/key": "x\xff"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:3: not valid UTF-8")):
        load_crossmodal3600(path)
    bad = BadRecords(strict=False)
    assert len(load_crossmodal3600(path, bad=bad)) == 4 + 4
    assert bad.counts == {"non-utf8": 1}


def test_language_missing_from_a_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "captions.jsonl", _lines((2, xm3600_line(KEYS[2], {"en": ["Two kids."]}))))
    with pytest.raises(DataError, match=re.escape(f"{path}:3: image {KEYS[2]} has no 'fil' captions")):
        load_crossmodal3600(path, langs=["en", "fil"])
    bad = BadRecords(strict=False)
    records = load_crossmodal3600(path, langs=["en", "fil"], bad=bad)
    assert bad.counts == {"missing language": 1}
    assert [r.caption_id for r in records if r.image_id == KEYS[2]] == [f"{KEYS[2]}.en.0"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "xm3600" / "captions.jsonl"
    with pytest.raises(DataError, match=re.escape(f"missing file: {missing}")):
        load_crossmodal3600(missing, bad=BadRecords(strict=False))
