"""The real benchmarks: where each one's files live by default, and their splits as RetrievalSplits.

Captions come from the published files (retrerank.data.sources), images from one collection per
dataset, read lazily: for region backbones an HDF5 region store (retrerank.data.stores, built by
`experiments.prepare`), for pixel backbones the raw image folder as downloaded (decoded in the
DataLoader workers). Which images a dataset uses decides its collection: Multi30k uses
Flickr30k's images, XTD10 MSCOCO's. Every caption must find its image in the collection; one that
does not is a bad record (strict: an error naming both files; lenient: skipped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrerank.config import DataConfig, SourceConfig
from retrerank.data.errors import BadRecords, DataError
from retrerank.data.records import CaptionRecord, RetrievalSplit

Captions = dict[str, list[CaptionRecord]]


@dataclass(frozen=True)
class DatasetInfo:
    captions: str  # default caption file / folder, relative to data.root
    images: str  # the image collection whose region store it uses (<root>/<images>/regions.h5)
    test_set: str  # the standard test set
    test_only: bool = False  # a zero-shot test set: no train / val


DATASETS = {
    "coco": DatasetInfo("coco/dataset_coco.json", "coco", "5k"),
    "flickr30k": DatasetInfo("flickr30k/dataset_flickr30k.json", "flickr30k", "1k"),
    "multi30k": DatasetInfo("multi30k/dataset", "flickr30k", "test_2016_flickr"),
    "xtd10": DatasetInfo("xtd10", "coco", "1k", test_only=True),
    "xm3600": DatasetInfo("xm3600/captions.jsonl", "xm3600", "3600", test_only=True),
}
TEST_SETS = {
    "coco": ("5k", "1k"),
    "flickr30k": ("1k",),
    "xtd10": ("1k",),
    "xm3600": ("3600",),
    "multi30k": ("test_2016_flickr", "test_2017_flickr", "test_2018_flickr", "test_2017_mscoco"),
}


def _path(root: str, given: str, default: str) -> Path:
    return Path(given) if given else Path(root) / default


def regions_path(root: str, dataset: str, given: str = "") -> Path:
    return _path(root, given, f"{DATASETS[dataset].images}/regions.h5")


def image_folder_path(root: str, dataset: str, given: str = "") -> Path:
    return _path(root, given, f"{DATASETS[dataset].images}/images")


def image_collection(root: str, dataset: str, inputs: str, regions: str = "", folder: str = ""):
    """The dataset's images as the model reads them: a RegionStore ("regions") or an ImageFolder
    ("pixels"); both answer `image_id in collection`, `.image(image_id)` and `.path`."""
    if inputs == "pixels":
        from retrerank.data.stores.image_folder import ImageFolder

        return ImageFolder(image_folder_path(root, dataset, folder))
    from retrerank.data.stores.region_store import RegionStore

    return RegionStore(regions_path(root, dataset, regions))


def _captions(name: str, path: Path, test_set: str, cfg: DataConfig, bad: BadRecords) -> Captions:
    """{"train", "val", "test"} (test-only datasets: just "test") of one dataset's captions."""
    if name in ("coco", "flickr30k"):
        from retrerank.data.sources.karpathy import load_karpathy

        return load_karpathy(path, restval=True, bad=bad)
    if name == "multi30k":
        from retrerank.data.sources.multi30k import load_multi30k

        def load(split: str, langs: list[str]) -> list[CaptionRecord]:
            return load_multi30k(path, task=cfg.multi30k_task, langs=langs, splits=[split], bad=bad)[split]

        # train and val in the training languages; the test split in the test languages, unless
        # another dataset is the test set (zero-shot transfer)
        out = {"train": load("train", cfg.train_langs), "val": load("val", cfg.train_langs)}
        out["test"] = [] if cfg.transfer.dataset else load(test_set, cfg.test_langs)
        return out
    if name == "xtd10":
        from retrerank.data.sources.xtd import load_xtd

        return {"test": load_xtd(path, bad=bad)}
    if name == "xm3600":
        from retrerank.data.sources.crossmodal3600 import load_crossmodal3600

        return {"test": load_crossmodal3600(path, bad=bad)}
    raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")


class RealDataset:
    """One dataset's captions joined with its image collection (region store or image folder)."""

    def __init__(
        self,
        name: str,
        cfg: DataConfig,
        source: SourceConfig | None = None,
        bad: BadRecords | None = None,
        inputs: str = "regions",
    ):
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
        info, given = (
            DATASETS[name],
            source
            or SourceConfig(
                captions=cfg.captions, regions=cfg.regions, image_folder=cfg.image_folder, test_set=cfg.test_set
            ),
        )
        self.name, self.bad = name, bad if bad is not None else BadRecords(cfg.strict)
        self.test_set = given.test_set or info.test_set
        if self.test_set not in TEST_SETS[name]:
            raise DataError(f"{name} has no test set {self.test_set!r}; choose from {list(TEST_SETS[name])}")
        self.captions_path = _path(cfg.root, given.captions, info.captions)
        self.store = image_collection(cfg.root, name, inputs, given.regions, given.image_folder)
        # Multi30k's test_2017_mscoco captions MSCOCO images: its test split reads COCO's collection
        self.test_store = (
            image_collection(cfg.root, "coco", inputs)
            if name == "multi30k" and self.test_set == "test_2017_mscoco"
            else self.store
        )
        self.captions = _captions(name, self.captions_path, self.test_set, cfg, self.bad)

    def split(self, name: str) -> RetrievalSplit:
        return self._join(name, self.captions[name], self.test_store if name == "test" else self.store)

    def test_folds(self) -> list[RetrievalSplit]:
        """The COCO 1k protocol: five folds of 1000 test images, evaluated separately and averaged."""
        from retrerank.data.sources.karpathy import karpathy_folds

        return [
            self._join(f"test_fold{i}", fold, self.test_store)
            for i, fold in enumerate(karpathy_folds(self.captions["test"]))
        ]

    def _join(self, split: str, captions: list[CaptionRecord], store) -> RetrievalSplit:
        kept = []
        for caption in captions:
            if caption.image_id in store:
                kept.append(caption)
            else:
                self.bad.bad(
                    "caption without image",
                    f"{self.captions_path}: caption {caption.caption_id!r} refers to image "
                    f"{caption.image_id!r}, which is not in {store.path}",
                )
        images = [store.image(image_id) for image_id in dict.fromkeys(c.image_id for c in kept)]
        return RetrievalSplit(split, images, kept)


def load_real(
    cfg: DataConfig, bad: BadRecords, inputs: str = "regions"
) -> tuple[dict[str, RetrievalSplit], list[RetrievalSplit]]:
    """(splits "train", "val", "test"; test folds, empty unless the protocol has them); images as
    region features (`inputs="regions"`) or raw pixels ("pixels")."""
    if DATASETS[cfg.dataset].test_only:
        raise DataError(
            f"{cfg.dataset} is a test set only: train on another dataset and set data.transfer.dataset={cfg.dataset}"
        )
    main = RealDataset(cfg.dataset, cfg, bad=bad, inputs=inputs)
    splits = {name: main.split(name) for name in ("train", "val", "test")}
    folds = main.test_folds() if main.test_set == "1k" and cfg.dataset == "coco" else []
    if cfg.transfer.dataset:  # zero-shot dataset transfer: the other dataset's test split
        other = RealDataset(cfg.transfer.dataset, cfg, cfg.transfer, bad, inputs)
        splits["test"] = other.split("test")
        folds = other.test_folds() if other.test_set == "1k" and other.name == "coco" else []
    if cfg.distractors.dataset:
        extra = RealDataset(cfg.distractors.dataset, cfg, cfg.distractors, bad, inputs).split("test")
        splits["test"] = with_distractors(splits["test"], extra, cfg.distractors.images)
        folds = []  # the enlarged set is one test set
    return splits, folds


def with_distractors(test: RetrievalSplit, other: RetrievalSplit, images: int = 0) -> RetrievalSplit:
    """`test` enlarged with (the first `images` of) another split's images and their captions,
    ids prefixed so that they cannot collide with the test set's own."""
    chosen = other.images[:images] if images else other.images
    keep = {image.image_id for image in chosen}
    renamed = [_renamed(image, f"distractor:{image.image_id}") for image in chosen]
    captions = [
        CaptionRecord(f"distractor:{c.caption_id}", f"distractor:{c.image_id}", c.text, c.lang)
        for c in other.captions
        if c.image_id in keep
    ]
    return RetrievalSplit(test.name, test.images + renamed, test.captions + captions)


def _renamed(image, image_id: str):
    import copy

    clone = copy.copy(image)
    object.__setattr__(clone, "image_id", image_id)  # works for frozen dataclasses and slot classes
    return clone
