"""Crossmodal-3600 (Thapliyal et al. 2022, google.github.io/crossmodal-3600, captions.zip).

captions.jsonl: one JSON object per image and line, {"image/key": "<open images id>", and per
language (36: ar bn cs da de el en es fa fi fil fr he hi hr hu id it ja ko mi nl no pl pt quz ro
ru sv sw te th tr uk vi zh) {"caption": [...], "caption/tokenized": [...],
"caption/tokenized/lowercase": [...]}}. Only "caption" is read. Image id = the image key (the
images are published as "<key>.jpg").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrerank.data.errors import BadRecords
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.text_files import iter_json_lines, require_file

KEY = "image/key"


def _languages(record: dict[str, Any]) -> list[str]:
    return [k for k, v in record.items() if k != KEY and isinstance(v, dict)]


def available_languages(path: str | Path, bad: BadRecords | None = None) -> list[str]:
    bad = bad if bad is not None else BadRecords()
    found: set[str] = set()
    for _, record in iter_json_lines(require_file(path), bad):
        if isinstance(record, dict):
            found.update(_languages(record))
    return sorted(found)


def load_crossmodal3600(
    path: str | Path, langs: Sequence[str] | None = None, bad: BadRecords | None = None
) -> list[CaptionRecord]:
    """All captions in `langs` (None: every language of each record), in file order.

    caption_id f"{key}.{lang}.{i}" with i the 0-based position in the "caption" list.
    """
    bad = bad if bad is not None else BadRecords()  # BadRecords is falsy until it has counted
    path = require_file(path)
    records: list[CaptionRecord] = []
    line_of: dict[str, int] = {}  # image key -> line, for duplicate messages
    for number, record in iter_json_lines(path, bad):
        where = f"{path}:{number}"
        key = record.get(KEY) if isinstance(record, dict) else None
        if not isinstance(key, str) or not key.strip():
            bad.bad("malformed record", f"{where}: no {KEY!r} string")
            continue
        key = key.strip()
        if key in line_of:
            # the same key again would repeat every caption id f"{key}.{lang}.{i}"
            bad.bad("duplicate caption id", f"{where}: image {key} already on line {line_of[key]}")
            continue
        line_of[key] = number
        for lang in langs if langs is not None else _languages(record):
            entry = record.get(lang)
            captions = entry.get("caption") if isinstance(entry, dict) else None
            if not isinstance(captions, list):
                bad.bad("missing language", f"{where}: image {key} has no {lang!r} captions")
                continue
            for i, text in enumerate(captions):
                text = text.strip() if isinstance(text, str) else ""
                if not text:
                    bad.bad("empty caption", f"{where}: image {key} {lang} caption {i} is empty")
                    continue
                records.append(CaptionRecord(f"{key}.{lang}.{i}", key, text, lang))
    return records
