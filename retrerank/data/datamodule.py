"""The DataModule: a dataset's splits, narrowed to the setup's languages, as caption batches.

One item per caption. A batch is
    {"text": tokenize(texts), "image": collate(images), "image_index": LongTensor [B]}
where collate is the backbone's (region features + boxes, or processed pixels) and image_index
is the row of the caption's image in its split, so that a loss can tell which captions of a
batch share an image.

Where the split knows exact relevance (`split.exact_relevance`: a caption may be true of other
images than its own, as the synthetic data's are), every batch (train, val and test) also has
    "relevant": LongTensor [B, W]  the image rows each caption is true of (split.caption_relevant),
                its own row first, padded with -1 to the widest row of the batch
so that a loss need not push apart a caption and an image it is true of. Without exact relevance
the key is absent.

Once hard negatives have been mined for the training split (`mined`, filled by
retrerank.callbacks.mining), each training item also draws n of them and the batch
gains, item-major (item 0's n, then item 1's ...):
    "neg_image": collate_images(B * n mined images)  -- never the caption's own image
    "neg_image_index": LongTensor [B, n]  their image rows
    "neg_text": tokenize(B * n mined captions)  -- never a caption of the item's image
    "neg_text_index": LongTensor [B, n]  the image rows of those captions
A batch has all four keys or none (none before the first mining, and in val/test batches).

Where the captions have foils (CaptionRecord.foils: near misses false of the caption's image, as
the synthetic data's are) and the datamodule is asked for them (`foils`: objective.foil_negatives),
a batch also has, item-major,
    "foil_text": tokenize(B * f foils)  -- f: that many, or the fewest any caption of the batch has
A batch lacks the key where its captions have none or no foils are asked for (the default): the
loader tokenises no text that no loss reads.

Training batches follow an order that is a function of (seed, epoch) (retrerank.data.samplers),
so that an interrupted run resumes mid-epoch with the batches it would have seen. Val and
test batches follow one fixed pseudo-random order, the same on every pass: in caption order
the captions of an image are consecutive, so a batch would hold only a few images and the
in-batch negatives of a validation loss would be nearly absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from retrerank.config import ConfigError, DataConfig, check_choice
from retrerank.data.collate import collate_images
from retrerank.data.errors import BadRecords
from retrerank.data.mining import Drawn, MinedNegatives
from retrerank.data.records import ImageRecord, RetrievalSplit
from retrerank.data.samplers import ResumableLoader, ResumableSampler
from retrerank.data.synthetic import ensure_synthetic, load_synthetic
from retrerank.distributed import world

Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]
# image records -> the image batch the backbone reads (region features, or processed pixels)
CollateImages = Callable[[list[ImageRecord]], dict[str, torch.Tensor]]
# a CaptionDataset item: (text, image, image row, mined negatives, relevant rows, foil texts)
Item = tuple[str, ImageRecord, int, tuple | None, list[int] | None, tuple[str, ...]]

EVAL_ORDER_SEED = 0  # a constant, not the run's seed: every run and every pass validates on the same batches


def prepare_dataset(cfg: DataConfig) -> None:
    """Write whatever the dataset caches on disk (the synthetic data), so that loading only reads."""
    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg.synthetic, cfg.root)


def load_splits(
    cfg: DataConfig, bad: BadRecords | None = None, inputs: str = "regions"
) -> tuple[dict[str, RetrievalSplit], list[RetrievalSplit]]:
    """The dataset's named splits ("train", "val", "test" and, where it has one, "novel") and the
    test folds of protocols that average over several (COCO 1k; otherwise empty). `inputs`: what
    the model reads images as, "regions" or "pixels" (the synthetic images carry both)."""
    if cfg.dataset == "synthetic":
        return load_synthetic(cfg.synthetic, cfg.root), []
    check_choice("data.dataset", cfg.dataset)
    from retrerank.data.datasets import load_real

    return load_real(cfg, bad if bad is not None else BadRecords(cfg.strict), inputs)


def balanced_language_sampler(split: RetrievalSplit, seed: int = 0, rank: int = 0, ranks: int = 1) -> ResumableSampler:
    """Every language drawn equally often: caption weight 1 / (captions in its language)."""
    counts = Counter(c.lang for c in split.captions)
    weights = torch.tensor([1.0 / counts[c.lang] for c in split.captions], dtype=torch.double)
    return ResumableSampler(split.captions, seed, rank, ranks, weights=weights)


def near_duplicate_pairs(split: RetrievalSplit) -> list[tuple[list[int], list[int]]]:
    """(caption rows of an image, caption rows of its near-duplicate), once per pair of images the
    dataset knows to be near-duplicates (ImageRecord.near); ids not in the split are ignored."""
    row = {image.image_id: i for i, image in enumerate(split.images)}
    captions: list[list[int]] = [[] for _ in split.images]
    for j, i in enumerate(split.caption_image_index.tolist()):
        captions[i].append(j)
    return [
        (captions[i], captions[row[other]])
        for i, image in enumerate(split.images)
        for other in image.near
        if other in row and i < row[other] and captions[i] and captions[row[other]]
    ]


def eval_order(n: int) -> list[int]:
    """The fixed pseudo-random order in which val/test loaders visit n captions."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(EVAL_ORDER_SEED)).tolist()


class CaptionDataset(Dataset):
    """The captions of a split; item j is (text, image record, image row, negatives, relevant, foils)
    of caption j, negatives None or (mined images, their rows, mined captions' texts, their image
    rows), relevant None (no exact relevance) or the image rows caption j is true of, foils the
    caption's foil texts (a tuple, maybe empty)."""

    def __init__(self, split: RetrievalSplit, mined: MinedNegatives | None = None) -> None:
        self.split = split
        self.mined = mined

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, j: int) -> Item:
        split = self.split
        row = int(split.caption_image_index[j])
        drawn = self.mined.draw(j, row) if self.mined is not None else None
        relevant = split.caption_relevant[j].tolist() if split.exact_relevance else None
        caption = split.captions[j]
        return caption.text, split.images[row], row, self._negatives(drawn), relevant, caption.foils

    def _negatives(self, drawn: Drawn | None) -> tuple | None:
        if drawn is None:
            return None
        split = self.split
        return (
            [split.images[r] for r in drawn.image_rows],
            drawn.image_rows,
            [split.captions[c].text for c in drawn.caption_rows],
            [int(split.caption_image_index[c]) for c in drawn.caption_rows],
        )


class CaptionCollate:
    """Tokenises and prepares images in the loader (and its workers), not in the training step."""

    def __init__(self, tokenize: Tokenize, collate: CollateImages = collate_images, foils: int = 0) -> None:
        self.tokenize = tokenize
        self.collate = collate
        self.foils = foils  # foil captions per item to tokenise (at most): what the matching loss reads

    def __call__(self, items: list[Item]) -> dict:
        texts, images, rows, negatives, relevant, foils = zip(*items)
        batch = {
            "text": self.tokenize(list(texts)),
            "image": self.collate(images),
            "image_index": torch.tensor(rows, dtype=torch.long),
        }
        if relevant[0] is not None:  # one split per loader: all items have it or none
            width = max(map(len, relevant))
            batch["relevant"] = torch.tensor([r + [-1] * (width - len(r)) for r in relevant], dtype=torch.long)
        if all(n is not None for n in negatives):  # all or none (items drawn as the first mining ends may differ)
            neg_images, image_rows, neg_texts, text_rows = zip(*negatives)
            batch["neg_image"] = self.collate([im for ims in neg_images for im in ims])
            batch["neg_image_index"] = torch.tensor(image_rows, dtype=torch.long)
            batch["neg_text"] = self.tokenize([t for ts in neg_texts for t in ts])
            batch["neg_text_index"] = torch.tensor(text_rows, dtype=torch.long)
        fewest = min(self.foils, *map(len, foils))
        if fewest:
            batch["foil_text"] = self.tokenize([text for own in foils for text in own[:fewest]])
        return batch


class RetrievalDataModule(pl.LightningDataModule):
    """Splits for a setup:

    - monolingual / multilingual / zeroshot: train and val captions in `train_langs`, test
      captions in `test_langs` (the names say what the languages are meant to be: one
      language, several, or train -> other test languages);
    - novel: as above, but the test split is the one with held-out attribute combinations.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenize: Tokenize,
        collate: CollateImages = collate_images,
        inputs: str = "regions",
        seed: int = 0,
        foils: int = 0,
    ) -> None:
        super().__init__()
        self.seed = seed  # the run's seed: with the epoch, it fixes the training order
        self.foils = foils  # foil captions per item that batches carry (objective.foil_negatives)
        # a DataConfig built in code has not passed config.load's checks
        check_choice("data.dataset", cfg.dataset)
        check_choice("data.setup", cfg.setup)
        self.cfg = cfg
        self.tokenize = tokenize
        self.collate = collate
        self.inputs = inputs  # what the model reads images as: "regions" or "pixels"
        self.train_split: RetrievalSplit | None = None
        self.val_split: RetrievalSplit | None = None
        self.test_split: RetrievalSplit | None = None
        self.test_folds: list[RetrievalSplit] = []  # evaluated one by one and averaged (COCO 1k)
        self.bad = BadRecords(cfg.strict)  # lenient loading: what was skipped, by reason
        self.mined: MinedNegatives | None = None  # hard negatives of the train split (set by mining)
        self.train_loader: ResumableLoader | None = None
        self._resume: dict | None = None  # a checkpoint's training-loader position, until the loader exists

    def prepare_data(self) -> None:
        # Lightning runs this once per node: the place to write caches
        prepare_dataset(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:  # fit, validate and test share one load
            return
        splits, folds = load_splits(self.cfg, self.bad, self.inputs)
        if self.bad:
            print(f"lenient loading (data.strict=false): {self.bad.summary()}")
        available = sorted({c.lang for split in splits.values() for c in split.captions})
        for key in ("train_langs", "test_langs"):
            langs = getattr(self.cfg, key)
            if not langs:
                raise ConfigError(f"invalid config key 'data.{key}': no languages given")
            for lang in langs:
                if lang not in available:
                    raise ConfigError(
                        f"invalid config key 'data.{key}': language {lang!r} is not in dataset "
                        f"{self.cfg.dataset!r}, which has {available}"
                    )
        test = "novel" if self.cfg.setup == "novel" else "test"
        if not splits[test].images:
            raise ConfigError(
                f"setup {self.cfg.setup!r} needs a non-empty {test!r} split "
                "(for synthetic data: data.synthetic.held_out_combos)"
            )
        self.train_split = splits["train"].filter_languages(self.cfg.train_langs)
        self.val_split = splits["val"].filter_languages(self.cfg.train_langs)
        self.test_split = splits[test].filter_languages(self.cfg.test_langs)
        self.test_folds = [fold.filter_languages(self.cfg.test_langs) for fold in folds]

    def _loader(self, split: RetrievalSplit | None, train: bool) -> DataLoader:
        if split is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        if train and len(split.captions) < self.cfg.batch_size:
            raise ConfigError(
                f"invalid config key 'data.batch_size': {self.cfg.batch_size} is more than the "
                f"{len(split.captions)} training captions (the last partial batch is dropped)"
            )
        if train:  # resumable: a function of (seed, epoch), sharded over the ranks
            rank, size = world()
            pairs = near_duplicate_pairs(split) if self.cfg.near_duplicate_batches else []
            sampler = (
                balanced_language_sampler(split, self.seed, rank, size)
                if self.cfg.balanced_langs
                else ResumableSampler(
                    split.captions,
                    self.seed,
                    rank,
                    size,
                    pairs=pairs,
                    pairs_from_epoch=self.cfg.near_duplicate_from_epoch,
                )
            )
            if self.mined is not None:  # mined draws depend on the epoch, as the order does
                sampler.epoch_listeners.append(self.mined.set_epoch)
                self.mined.set_epoch(sampler.epoch)
        else:  # a list: the same order on every pass
            sampler = eval_order(len(split.captions))
        return (ResumableLoader if train else DataLoader)(
            CaptionDataset(split, self.mined if train else None),
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            collate_fn=CaptionCollate(self.tokenize, self.collate, self.foils),
        )

    def train_dataloader(self) -> DataLoader:
        self.train_loader = self._loader(self.train_split, train=True)
        if self._resume is not None:
            self.train_loader.load_state_dict(self._resume)
            self._resume = None
        return self.train_loader

    # Checkpoints keep the training loader's position here, not only in Lightning's loop state:
    # Lightning restores the datamodule before it builds the loader, whereas it skips a loader
    # state when the loader was built before the restore (by `estimated_stepping_batches`, which
    # the LR schedule needs; Lightning issue #20550).
    def state_dict(self) -> dict:
        return {"train_loader": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, train=False)
