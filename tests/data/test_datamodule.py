"""RetrievalDataModule: setups and languages, batch format, image_index, relevant rows, shuffling and eval order."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from retrerank.config import DataConfig, SyntheticConfig
from retrerank.data.datamodule import CaptionCollate, CaptionDataset, RetrievalDataModule
from retrerank.data.mining import MinedNegatives
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit

SYNTHETIC = SyntheticConfig(n_train=20, n_val=6, n_test=6, feature_dim=16)


def fake_tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """Words hashed into ids, padded: enough of a tokenizer for batch shapes."""
    ids = [[1] + [zlib.crc32(word.encode()) % 997 + 2 for word in text.split()] for text in texts]
    width = max(map(len, ids))
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def make(tmp_path: Path, foils: int = 0, **changes) -> RetrievalDataModule:
    cfg = dataclasses.replace(DataConfig(root=str(tmp_path), batch_size=8, synthetic=SYNTHETIC), **changes)
    module = RetrievalDataModule(cfg, fake_tokenize, foils=foils)
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")  # one synthetic cache for the whole file


def langs(split) -> set[str]:
    return {c.lang for c in split.captions}


def test_monolingual_default_is_english(root: Path) -> None:
    dm = make(root)
    assert langs(dm.train_split) == langs(dm.val_split) == langs(dm.test_split) == {"en"}
    assert len(dm.train_split.images) == 20 and len(dm.train_split.captions) == 100
    assert dm.test_split.images[0].image_id.startswith("syn-test-")


def test_zeroshot_trains_on_one_language_and_tests_on_others(root: Path) -> None:
    dm = make(root, setup="zeroshot", train_langs=["en"], test_langs=["de", "fr", "cs"])
    assert langs(dm.train_split) == langs(dm.val_split) == {"en"}
    assert langs(dm.test_split) == {"de", "fr", "cs"}
    assert len(dm.test_split.captions) == 6 * 5 * 3


def test_multilingual_trains_on_all_given_languages(root: Path) -> None:
    dm = make(root, setup="multilingual", train_langs=["en", "de", "fr", "cs"], test_langs=["en", "de"])
    assert langs(dm.train_split) == {"en", "de", "fr", "cs"}
    assert langs(dm.test_split) == {"en", "de"}


def test_novel_setup_tests_on_held_out_combos(root: Path) -> None:
    dm = make(root, setup="novel")
    assert all(im.image_id.startswith("syn-novel-") for im in dm.test_split.images)
    assert all(im.image_id.startswith("syn-val-") for im in dm.val_split.images)


def test_unknown_language_is_named(root: Path) -> None:
    with pytest.raises(ValueError, match=r"'xx'.*\['cs', 'de', 'en', 'fr'\]"):
        make(root, test_langs=["en", "xx"])


def test_unknown_dataset_and_setup_are_named(root: Path) -> None:
    with pytest.raises(ValueError, match="'imagenet'"):
        make(root, dataset="imagenet")
    with pytest.raises(ValueError, match="'bilingual'"):
        make(root, setup="bilingual")


def test_batches_carry_the_foils_the_loss_asks_for(root: Path) -> None:
    """foils=n (objective.foil_negatives): every loader's batches tokenise each caption's first n
    foils, item-major, or all it has where that is fewer (the synthetic default stores one)."""
    for asked, per_caption in ((1, 1), (3, 1)):
        dm = make(root, foils=asked)
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            batch = next(iter(loader))
            assert batch["foil_text"]["input_ids"].shape[0] == 8 * per_caption
    dm = make(root, foils=1)
    split = dm.val_split
    items = [CaptionDataset(split)[j] for j in range(3)]
    batch = CaptionCollate(fake_tokenize, foils=1)(items)
    assert torch.equal(batch["foil_text"]["input_ids"], fake_tokenize([item[5][0] for item in items])["input_ids"])


def test_train_batches(root: Path) -> None:
    dm = make(root)
    loader = dm.train_dataloader()
    assert len(loader) == 100 // 8  # drop_last
    batches = list(loader)
    assert len(batches) == 12
    batch = batches[0]
    assert dm.train_split.exact_relevance  # synthetic captions are often true of other scenes too
    assert set(batch) == {"text", "image", "image_index", "relevant"}  # no foils asked for: none tokenised
    assert batch["text"]["input_ids"].shape[0] == 8
    assert batch["image"]["features"].shape[::2] == (8, 16)
    assert batch["image"]["region_mask"].shape == batch["image"]["features"].shape[:2]
    assert batch["image_index"].dtype == torch.long and batch["image_index"].shape == (8,)
    assert batch["relevant"].shape[0] == 8 and torch.equal(batch["relevant"][:, 0], batch["image_index"])
    for b, row in enumerate(batch["image_index"].tolist()):  # the row names the image that is in the batch
        image = dm.train_split.images[row]
        assert torch.equal(batch["image"]["features"][b, : len(image.features)], torch.from_numpy(image.features))


def test_eval_batches_mix_images_in_a_fixed_order(root: Path) -> None:
    dm = make(root, setup="zeroshot", test_langs=["de"])
    for make_loader, split in ((dm.val_dataloader, dm.val_split), (dm.test_dataloader, dm.test_split)):
        loader = make_loader()
        rows = [batch["image_index"].tolist() for batch in loader]
        assert [len(r) for r in rows] == [8, 8, 8, 6]  # 6 images x 5 captions, the last batch kept
        assert sorted(sum(rows, [])) == sorted(split.caption_image_index.tolist())  # every caption once
        # in caption order a batch of 8 holds 2 or 3 images (5 captions each): these hold more
        assert all(len(set(r)) >= 4 for r in rows)
        assert [batch["image_index"].tolist() for batch in loader] == rows  # a second pass
        assert [batch["image_index"].tolist() for batch in make_loader()] == rows  # a second call
    loader = dm.test_dataloader()
    order = list(loader.sampler)[:8]
    batch = next(iter(loader))
    expected = fake_tokenize([dm.test_split.texts[j] for j in order])
    assert torch.equal(batch["text"]["input_ids"], expected["input_ids"])
    assert batch["image_index"].tolist() == dm.test_split.caption_image_index[order].tolist()


def test_eval_batches_carry_relevant_rows_where_the_split_has_them(root: Path) -> None:
    dm = make(root, setup="novel")
    # with 6 images no val caption is true of another; in the novel split (held-out combos) some are
    assert not dm.val_split.exact_relevance and dm.test_split.exact_relevance
    assert all("relevant" not in batch for batch in dm.val_dataloader())
    loader = dm.test_dataloader()
    order = list(loader.sampler)
    for b, batch in enumerate(loader):
        relevant = [dm.test_split.caption_relevant[j].tolist() for j in order[8 * b : 8 * b + 8]]
        width = max(map(len, relevant))
        assert batch["relevant"].shape == (len(relevant), width) and batch["relevant"].dtype == torch.long
        assert batch["relevant"].tolist() == [r + [-1] * (width - len(r)) for r in relevant]
        assert torch.equal(batch["relevant"][:, 0], batch["image_index"])  # own row first


def test_relevant_rows_own_first_padded_and_absent_without_exact_relevance() -> None:
    def image(image_id: str) -> ImageRecord:
        return ImageRecord(image_id, np.ones((2, 4), np.float32), np.full((2, 4), 0.5, np.float32))

    images = [image(i) for i in "abcd"]
    plain = [CaptionRecord(f"{i}0", i, f"caption of {i}") for i in "abcd"]
    batch = CaptionCollate(fake_tokenize)([CaptionDataset(RetrievalSplit("toy", images, plain))[j] for j in range(4)])
    assert set(batch) == {"text", "image", "image_index"}  # as before exact relevance existed

    also = [("c", "zzz"), (), ("a", "b", "d"), ("b",)]
    split = RetrievalSplit("toy", images, [dataclasses.replace(c, also=a) for c, a in zip(plain, also)])
    mined = MinedNegatives(4, 4, top_k=2, draws=1)
    dataset = CaptionDataset(split, mined)
    batch = CaptionCollate(fake_tokenize)([dataset[j] for j in (1, 0, 2, 3)])
    assert batch["image_index"].tolist() == [1, 0, 2, 3]
    assert batch["relevant"].tolist() == [[1, -1, -1, -1], [0, 2, -1, -1], [2, 0, 1, 3], [3, 1, -1, -1]]
    assert "neg_image" not in batch  # nothing mined yet
    mined.fill(torch.tensor([[1, 2], [0, 2], [0, 1], [0, 1]]), torch.tensor([[1, 2], [0, 2], [0, 1], [0, 1]]))
    batch = CaptionCollate(fake_tokenize)([dataset[j] for j in (0, 3)])  # with mined negatives too
    assert batch["relevant"].tolist() == [[0, 2], [3, 1]]
    assert batch["neg_image_index"].shape == batch["neg_text_index"].shape == (2, 1)


def test_training_order_follows_the_seed_and_epoch_only(root: Path) -> None:
    dm = make(root)

    def first_rows(seed: int, epoch: int = 0) -> list[int]:
        dm.seed = seed
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # Lightning does this at every epoch start
        return next(iter(loader))["image_index"].tolist()

    assert first_rows(3) == first_rows(3)
    assert first_rows(3) != first_rows(4)
    assert first_rows(3, epoch=1) != first_rows(3)
    pl.seed_everything(7, verbose=False)  # the global generator plays no part: a resumed run rebuilds the order
    assert first_rows(3) == (pl.seed_everything(8, verbose=False), first_rows(3))[1]


def test_batch_size_larger_than_training_set_is_an_error(root: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        make(root, batch_size=1000).train_dataloader()


def test_near_duplicate_batches_put_twins_together(root: Path) -> None:
    """data.near_duplicate_batches: every twin pair of the train split meets in a batch each epoch
    (up to batch boundaries); off, the order is the plain permutation."""
    from retrerank.config import ConfigError
    from retrerank.data.datamodule import near_duplicate_pairs

    dm = make(root, near_duplicate_batches=True)
    split = dm.train_split
    pairs = near_duplicate_pairs(split)
    row = {image.image_id: i for i, image in enumerate(split.images)}
    assert len(pairs) == sum(bool(image.near) for image in split.images) // 2 > 0
    for a, b in pairs:
        (i,), (j,) = set(split.caption_image_index[a].tolist()), set(split.caption_image_index[b].tolist())
        assert split.images[i].near == (split.images[j].image_id,) and row[split.images[j].near[0]] == i

    twin = {}
    for a, b in pairs:
        i, j = int(split.caption_image_index[a[0]]), int(split.caption_image_index[b[0]])
        twin[i], twin[j] = j, i

    def met(module, epoch: int = 0) -> float:
        """The share of the paired images' captions whose batch holds a caption of the twin."""
        hits = total = 0
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            rows = batch["image_index"].tolist()
            for r in rows:
                if r in twin:
                    hits, total = hits + (twin[r] in rows), total + 1
        return hits / total

    assert met(dm) >= 0.9  # a batch boundary may split a pair
    assert met(make(root)) < 0.6  # off by default
    with pytest.raises(ConfigError, match="near_duplicate_batches"):
        DataConfig(balanced_langs=True, near_duplicate_batches=True).check()
    with pytest.raises(ConfigError, match="'data.near_duplicate_from_epoch'.*near_duplicate_batches=true"):
        DataConfig(near_duplicate_from_epoch=1).check()
    with pytest.raises(ConfigError, match="'data.near_duplicate_from_epoch': must be >= 0"):
        DataConfig(near_duplicate_batches=True, near_duplicate_from_epoch=-1).check()
    # a curriculum: the first epoch as with the option off, the second paired
    late = make(root, near_duplicate_batches=True, near_duplicate_from_epoch=1)
    first = [batch["image_index"].tolist() for batch in late.train_dataloader()]
    assert first == [batch["image_index"].tolist() for batch in make(root).train_dataloader()]
    assert met(late, epoch=0) < 0.6 and met(late, epoch=1) == met(dm, epoch=1) > 0.75
