"""Multi30k in the layout of github.com/multi30k/dataset.

Task 1 (one caption per image and language, translations of each other):
  data/task1/image_splits/{split}.txt   image file names, one per line
  data/task1/raw/{split}.{lang}[.gz]    captions aligned line by line (lang: en, de, fr, cs)
  splits: train, val, test_2016_flickr, test_2017_flickr, test_2018_flickr, test_2017_mscoco
  (the mscoco list writes "COCO_val2014_000000398076.jpg#657409": file name#COCO caption id).
Task 2 (five independent captions per image, en and de):
  data/task2/image_splits/{split}_images.txt
  data/task2/raw/{split}.{1..5}.{lang}[.gz]   splits: train, val, test_2016
The repository ships the raw captions gzipped; plain files are read too.
Image ids: Flickr30k file stems ("1000092795"), COCO numbers for COCO names ("117071").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord
from retrerank.data.sources.text_files import aligned_captions, plain_or_gz, read_image_ids

LANGUAGES = {1: ("en", "de", "fr", "cs"), 2: ("en", "de")}
TASK2_CAPTIONS = 5


def _task_dir(root: str | Path, task: int) -> Path:
    if task not in LANGUAGES:
        raise ValueError(f"Multi30k task must be 1 or 2, got {task!r}")
    return Path(root) / "data" / f"task{task}"


def image_list_path(root: str | Path, task: int, split: str) -> Path:
    name = f"{split}.txt" if task == 1 else f"{split}_images.txt"
    return _task_dir(root, task) / "image_splits" / name


def caption_paths(root: str | Path, task: int, split: str, lang: str) -> list[Path]:
    """The caption files of one split and language, without the optional .gz."""
    raw = _task_dir(root, task) / "raw"
    if task == 1:
        return [raw / f"{split}.{lang}"]
    return [raw / f"{split}.{i}.{lang}" for i in range(1, TASK2_CAPTIONS + 1)]


def _exists(path: Path) -> bool:
    return path.is_file() or path.with_name(path.name + ".gz").is_file()


def available_splits(root: str | Path, task: int = 1) -> list[str]:
    folder = _task_dir(root, task) / "image_splits"
    if not folder.is_dir():
        raise DataError(f"missing folder: {folder}")
    suffix = ".txt" if task == 1 else "_images.txt"
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def available_languages(root: str | Path, task: int = 1, split: str = "train") -> list[str]:
    """The languages whose caption file(s) exist for `split` (not every test set has all four)."""
    return [lang for lang in LANGUAGES[task] if all(_exists(p) for p in caption_paths(root, task, split, lang))]


def load_multi30k(
    root: str | Path,
    task: int = 1,
    langs: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    bad: BadRecords | None = None,
) -> dict[str, list[CaptionRecord]]:
    """Captions by split. caption_id: task 1 f"{split}.{lang}.{line}", task 2
    f"{split}.{i}.{lang}.{line}" (i = 1..5 the caption file, line 1-based).

    splits=None loads every split under image_splits/, each with those of `langs` (default: all
    of the task's languages) that it publishes. A named split loads every named language (a
    missing file is an error) or, with langs=None, the languages it publishes.
    A caption file whose line count differs from its image list is skipped whole in lenient mode:
    its alignment is unknown.
    """
    bad = bad if bad is not None else BadRecords()  # BadRecords is falsy until it has counted
    discovered = splits is None
    split_names = available_splits(root, task) if discovered else list(splits)
    out: dict[str, list[CaptionRecord]] = {}
    for split in split_names:
        if discovered:
            found = available_languages(root, task, split)
            split_langs = [lang for lang in (langs or found) if lang in found]
            if not split_langs:
                continue
        else:
            split_langs = list(langs) if langs else available_languages(root, task, split)
            if not split_langs:
                paths = caption_paths(root, task, split, LANGUAGES[task][0])
                raise DataError(f"missing files: no caption files for split {split!r} (such as {paths[0]}[.gz])")
        out[split] = _load_split(root, task, split, split_langs, bad)
    if not out:
        raise DataError(f"no Multi30k task {task} captions in {list(langs or LANGUAGES[task])} under {root}")
    return out


def _load_split(root: str | Path, task: int, split: str, langs: list[str], bad: BadRecords) -> list[CaptionRecord]:
    image_list = image_list_path(root, task, split)
    image_ids = read_image_ids(image_list, bad)
    records: list[CaptionRecord] = []
    for lang in langs:
        for index, path in enumerate(caption_paths(root, task, split, lang), 1):
            caption_id = f"{split}.{lang}.{{number}}" if task == 1 else f"{split}.{index}.{lang}.{{number}}"
            records += aligned_captions(plain_or_gz(path), image_ids, image_list, lang, caption_id, bad)
    return records
