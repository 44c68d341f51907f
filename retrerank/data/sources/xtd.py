"""XTD10 (Aggarwal & Kale 2020, github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10).

1000 MSCOCO images with one caption per language. Layout of the repository:
  XTD10/test_image_names.txt           COCO image file names, one per line
  XTD10/test_1kcaptions_{lang}.txt     es, it, ko, pl, ru, tr, zh, en (aligned line by line)
  MIC/test_1kcaptions_{de,fr}.txt      German and French (from Multilingual Image Captioning)
  STAIR/test_1kcaptions_jp.txt         Japanese (from STAIR captions; the code is "jp")
`root` may be the repository or a folder holding all the files flat. Image ids are COCO numbers
without zero padding, to match a COCO region store keyed by cocoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.text_files import aligned_captions, read_image_ids

IMAGE_NAMES = "test_image_names.txt"
CAPTIONS = "test_1kcaptions_{}.txt"
_FOLDERS = ("", "XTD10", "MIC", "STAIR")  # where the repository keeps caption files


def _caption_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    prefix, suffix = CAPTIONS.split("{}")
    for folder in _FOLDERS:
        directory = root / folder
        if directory.is_dir():
            for path in sorted(directory.glob(CAPTIONS.format("*"))):
                found.setdefault(path.name[len(prefix) : -len(suffix)], path)
    return found


def available_languages(root: str | Path) -> list[str]:
    return sorted(_caption_files(Path(root)))


def image_names_path(root: str | Path) -> Path:
    root = Path(root)
    for folder in ("", "XTD10"):
        if (root / folder / IMAGE_NAMES).is_file():
            return root / folder / IMAGE_NAMES
    raise DataError(f"missing file: {root / IMAGE_NAMES} (nor {root / 'XTD10' / IMAGE_NAMES})")


def load_xtd(
    root: str | Path, langs: Sequence[str] | None = None, bad: BadRecords | None = None
) -> list[CaptionRecord]:
    """All captions of the test set; caption_id f"xtd10.{lang}.{line}" (line 1-based).

    langs=None loads every language found. A caption file whose line count differs from the image
    list is skipped whole in lenient mode: its alignment is unknown.
    """
    bad = bad if bad is not None else BadRecords()  # BadRecords is falsy until it has counted
    root = Path(root)
    names_path = image_names_path(root)
    files = _caption_files(root)
    if langs is None:
        langs = sorted(files)
        if not langs:
            raise DataError(f"missing files: no {CAPTIONS.format('<lang>')} under {root}")
    image_ids = read_image_ids(names_path, bad)
    records: list[CaptionRecord] = []
    for lang in langs:
        if lang not in files:
            raise DataError(f"missing file: {root / CAPTIONS.format(lang)} (looked in {', '.join(_FOLDERS[1:])} too)")
        records += aligned_captions(files[lang], image_ids, names_path, lang, f"xtd10.{lang}.{{number}}", bad)
    return records
