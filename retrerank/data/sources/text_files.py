"""Reading the files caption datasets ship as, with errors that name the file and the line.

Line files are read as bytes and split on b"\\n" only, so that line i of the result is line i of
the file (Multi30k and XTD align captions with image lists line by line, and a caption may hold
characters that str.splitlines would also break on). Whole-file problems (missing, unreadable,
malformed JSON document) always raise DataError: there is no record to skip. A JSON document with
bytes that are not UTF-8 is still parsed in lenient mode (the bytes kept as lone surrogates), so
that its reader can skip just the records holding them (`is_utf8`).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord


def require_file(path: str | Path) -> Path:
    """The path, or DataError naming it (in strict and lenient mode alike)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    return path


def plain_or_gz(path: str | Path) -> Path:
    """`path` if it exists, else `path.gz` (Multi30k ships its raw captions gzipped)."""
    path = Path(path)
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    if gz.is_file():
        return gz
    raise DataError(f"missing file: {path} (nor {gz.name})")


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz."""
    path = require_file(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({e})") from e


def _raw_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line (or an empty file)
        lines.pop()
    if lines and lines[0].startswith(codecs.BOM_UTF8):
        lines[0] = lines[0][len(codecs.BOM_UTF8) :]
    return lines


def read_lines(path: str | Path, bad: BadRecords) -> list[str | None]:
    """The UTF-8 lines of a text file (optionally .gz), without line ends.

    A line that is not UTF-8 is reported as "{path}:{line}" and kept as None, so positions still
    match the file for aligned files.
    """
    path = Path(path)
    out: list[str | None] = []
    for number, raw in enumerate(_raw_lines(read_bytes(path)), 1):
        try:
            out.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            bad.bad("non-utf8", f"{path}:{number}: not valid UTF-8 (byte {e.start + 1} of the line)")
            out.append(None)
    return out


def load_json(path: str | Path, bad: BadRecords | None = None) -> Any:
    """A whole JSON document; DataError with file:line:column when it is not JSON.

    Bytes that are not UTF-8 raise DataError with file and line, unless `bad` is lenient: then they
    come through as lone surrogates, and the caller skips the strings that hold them (`is_utf8`).
    """
    path = Path(path)
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if bad is None or bad.strict:
            line = data.count(b"\n", 0, e.start) + 1
            raise DataError(f"{path}:{line}: not valid UTF-8 (byte offset {e.start})") from e
        text = data.decode("utf-8-sig", errors="surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg})") from e


def is_utf8(text: str) -> bool:
    """False for a string from `load_json`'s lenient mode that holds bytes which are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_json_lines(path: str | Path, bad: BadRecords) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each non-blank line of a JSON-lines file; broken lines go to `bad`."""
    path = Path(path)
    for number, raw in enumerate(_raw_lines(read_bytes(path)), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.bad("non-utf8", f"{path}:{number}: not valid UTF-8 (byte {e.start + 1} of the line)")
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as e:
            bad.bad("malformed json", f"{path}:{number}:{e.colno}: malformed JSON ({e.msg})")


# COCO 2014 names (COCO_train2014_000000391895.jpg) and 2017 names (000000391895.jpg): the
# bottom-up-attention TSVs key COCO images by the bare number.
_COCO_STEM = re.compile(r"^(?:COCO_[a-z]+\d{4}_)?(\d{12})$")


def image_id_from_filename(name: str) -> str:
    """The region-store key of an image file name: the COCO number for COCO names, else the stem.

    Drops a "#..." suffix (Multi30k's test_2017_mscoco list writes "<file>#<COCO caption id>")
    and any folder ("val2014/...").
    """
    name = name.split("#", 1)[0].strip()
    stem = Path(name).stem
    match = _COCO_STEM.match(stem)
    return str(int(match.group(1))) if match else stem


def read_image_ids(path: Path, bad: BadRecords) -> list[str | None]:
    """One image id per line of an image list (None where the line is unreadable or empty)."""
    image_ids: list[str | None] = []
    for number, name in enumerate(read_lines(path, bad), 1):
        if name is not None and not name.strip():
            bad.bad("empty image name", f"{path}:{number}: empty image name")
            name = None
        image_ids.append(None if name is None else image_id_from_filename(name))
    return image_ids


def aligned_captions(
    path: Path, image_ids: list[str | None], image_list: Path, lang: str, caption_id: str, bad: BadRecords
) -> list[CaptionRecord]:
    """Captions of a file whose line i describes image_ids[i] (Multi30k, XTD); `caption_id` is a
    format string with {number}, the 1-based line."""
    lines = read_lines(path, bad)
    if len(lines) != len(image_ids):
        bad.bad(
            "line-count mismatch",
            f"{path} has {len(lines)} lines but {image_list} has "
            f"{len(image_ids)}; captions align with images line by line",
        )
        return []
    records = []
    for number, (text, image_id) in enumerate(zip(lines, image_ids), 1):
        if text is None or image_id is None:  # already reported
            continue
        text = text.strip()
        if not text:
            bad.bad("empty caption", f"{path}:{number}: empty caption (image {image_id})")
            continue
        records.append(CaptionRecord(caption_id.format(number=number), image_id, text, lang))
    return records
