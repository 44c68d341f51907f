"""Real benchmarks through the config: published caption files + a region store built by the
converters, joined by the DataModule, trained and evaluated by experiments.run on a tiny model."""

import json

import numpy as np
import pytest

from experiments.run import main
from retrerank.config import load
from retrerank.data.datamodule import RetrievalDataModule
from retrerank.data.errors import DataError
from retrerank.data.stores.region_store import RegionStoreWriter
from tests.data.sources import fixtures

FEATURES = 16


def write_store(path, ids, skip=()):
    rng = np.random.default_rng(0)
    with RegionStoreWriter(path, FEATURES, dtype="float16") as writer:
        for image_id in ids:
            if image_id in skip:
                continue
            regions = int(rng.integers(2, 5))
            xy = rng.random((regions, 2)) * 300
            writer.add(
                image_id,
                rng.standard_normal((regions, FEATURES)).astype(np.float32),
                np.concatenate([xy, xy + 100], 1),
                width=640,
                height=480,
            )
    return path


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    captions = fixtures.write_karpathy_coco(root / "coco")
    ids = [str(cocoid) for cocoid, _, _ in fixtures.COCO_IMAGES]
    return root, captions, write_store(root / "coco" / "regions.h5", ids)


def datamodule(root, *overrides):
    cfg = load(None, [f"data.root={root}", "data.dataset=coco", *overrides])
    dm = RetrievalDataModule(cfg.data, lambda texts: {"n": len(texts)})
    dm.setup("fit")
    return dm


def test_coco_splits_come_from_the_karpathy_file_and_the_store(coco):
    root, _, _ = coco
    dm = datamodule(root)
    by_split = {
        s: {cocoid for cocoid, split, _ in fixtures.COCO_IMAGES if split in s}
        for s in (("train", "restval"), ("val",), ("test",))
    }
    assert {int(im.image_id) for im in dm.train_split.images} == by_split[("train", "restval")]
    assert {int(im.image_id) for im in dm.test_split.images} == by_split[("test",)]
    image = dm.test_split.images[0]
    assert image.features.shape[1] == FEATURES and image.boxes.max() <= 1.0  # lazily read, normalised
    assert dm.train_split.captions[0].text == "A restaurant has modern wooden tables and chairs."


def test_a_caption_without_features_is_named_or_skipped(coco, tmp_path):
    root, captions, _ = coco
    ids = [str(c) for c, _, _ in fixtures.COCO_IMAGES]
    store = write_store(tmp_path / "partial.h5", ids, skip={"522418"})
    with pytest.raises(DataError, match=r"dataset_coco.json: caption .* image '522418'.*partial.h5"):
        datamodule(root, f"data.regions={store}")
    dm = datamodule(root, f"data.regions={store}", "data.strict=false")
    assert dm.bad.counts == {"caption without image": 1}
    assert "522418" not in {im.image_id for im in dm.test_split.images}


def test_transfer_and_distractors(coco, tmp_path):
    root, _, _ = coco
    flickr = fixtures.write_karpathy_flickr30k(root / "flickr30k")
    write_store(root / "flickr30k" / "regions.h5", [name.split(".")[0] for name, _, _ in fixtures.FLICKR_IMAGES])
    dm = datamodule(root, "data.transfer.dataset=flickr30k")
    assert [im.image_id for im in dm.test_split.images] == ["1000268201"]  # Flickr30k's test image
    dm = datamodule(root, "data.distractors.dataset=flickr30k")
    ids = [im.image_id for im in dm.test_split.images]
    assert ids[-1] == "distractor:1000268201" and len(ids) == 5
    assert dm.test_split.captions[-1].text == "A child in a pink dress is climbing up stairs."
    assert flickr.exists()


def test_test_only_datasets_and_unknown_test_sets_are_refused(coco):
    root, _, _ = coco
    with pytest.raises(DataError, match="1k"):
        datamodule(root, "data.test_set=2k")


def test_coco_run_end_to_end_with_region_store(coco, tiny_bert_dir, tmp_path):
    root, _, _ = coco
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=coco",
            f"data.root={root}",
            "data.dataset=coco",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            "data.batch_size=2",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "eval.ks=[1,2]",
            "eval.rerank_ks=[2]",
            "eval.val_methods=[rerank@2]",
            "eval.monitor=val/rerank@2/rsum",
            "eval.cross_all=false",
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/rerank@2/rsum"] <= 400 and "test/bi/t2i_r1" in metrics


def test_multi30k_zero_shot_languages_and_xtd_transfer(tmp_path):
    root = tmp_path
    fixtures.write_multi30k(root / "multi30k" / "dataset")
    flickr = [n.split(".")[0] for split in ("train", "val") for n in fixtures.MULTI30K_TASK1_IMAGES[split]]
    write_store(root / "flickr30k" / "regions.h5", flickr)
    write_store(root / "coco" / "regions.h5", ["117071", "398076"] + fixtures.XTD_IMAGE_IDS)
    dm = RetrievalDataModule(
        load(
            None,
            [
                f"data.root={root}",
                "data.dataset=multi30k",
                "data.setup=zeroshot",
                "data.test_set=test_2017_mscoco",
                "data.train_langs=[en]",
                "data.test_langs=[de]",
            ],
        ).data,
        lambda texts: {},
    )
    dm.setup("fit")
    assert {c.lang for c in dm.train_split.captions} == {"en"} and len(dm.train_split.captions) == 3
    assert [c.text for c in dm.test_split.captions] == fixtures.MULTI30K_TASK1[("test_2017_mscoco", "de")]
    assert [im.image_id for im in dm.test_split.images] == ["117071", "398076"]  # from COCO's store
    fixtures.write_xtd(root / "xtd10")
    dm = RetrievalDataModule(
        load(
            None,
            [
                f"data.root={root}",
                "data.dataset=multi30k",
                "data.setup=zeroshot",
                "data.test_set=test_2017_mscoco",
                "data.train_langs=[en]",
                "data.test_langs=[es,de]",
                "data.transfer.dataset=xtd10",
            ],
        ).data,
        lambda texts: {},
    )
    dm.setup("fit")
    assert [im.image_id for im in dm.test_split.images] == fixtures.XTD_IMAGE_IDS
    assert {c.lang for c in dm.test_split.captions} == {"es", "de"} and len(dm.test_split.captions) == 6


def test_balanced_language_sampling_draws_each_language_equally(tmp_path):
    from collections import Counter

    from retrerank.data.datamodule import balanced_language_sampler
    from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit

    images = [ImageRecord("a", np.zeros((1, 2), np.float32), np.zeros((1, 4), np.float32))]
    captions = [CaptionRecord(f"en{i}", "a", "x", "en") for i in range(90)] + [CaptionRecord("de0", "a", "y", "de")] * 1
    captions += [CaptionRecord(f"de{i}", "a", "y", "de") for i in range(1, 10)]
    split = RetrievalSplit("train", images, captions)
    import torch

    torch.manual_seed(0)
    drawn = Counter(captions[i].lang for i in list(balanced_language_sampler(split)) * 20)
    assert abs(drawn["en"] / sum(drawn.values()) - 0.5) < 0.05  # 90 vs 10 captions, drawn 50:50


def write_coco_images(root, skip=()):
    """COCO's raw download layout: train2014/ and val2014/ folders of COCO_<split>_<id>.jpg files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cocoid, split, _ in fixtures.COCO_IMAGES:
        if str(cocoid) in skip:
            continue
        folder = root / "coco" / "images" / ("train2014" if split == "train" else "val2014")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"COCO_{folder.name}_{cocoid:012d}.jpg")


def test_pixel_backbones_read_the_raw_image_folder(coco, tmp_path):
    root, _, _ = coco
    write_coco_images(root)
    cfg = load(None, [f"data.root={root}", "data.dataset=coco"])
    dm = RetrievalDataModule(
        cfg.data, lambda texts: {}, lambda images: [im.pixels.shape for im in images], inputs="pixels"
    )
    dm.setup("fit")
    assert {int(im.image_id) for im in dm.test_split.images} == {c for c, s, _ in fixtures.COCO_IMAGES if s == "test"}
    batch = next(iter(dm.test_dataloader()))
    assert set(batch["image"]) == {(24, 30, 3)}  # decoded from the JPEG files, full size
    write_coco_images(tmp_path, skip={"522418"})
    with pytest.raises(DataError, match=r"caption .* image '522418'.*images"):
        RetrievalDataModule(
            load(
                None, [f"data.root={root}", "data.dataset=coco", f"data.image_folder={tmp_path / 'coco' / 'images'}"]
            ).data,
            lambda texts: {},
            inputs="pixels",
        ).setup("fit")


def test_coco_run_end_to_end_on_pixels_with_a_clip_model(coco, tiny_clip_dir, tmp_path):
    root, _, _ = coco
    write_coco_images(root)
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=coco",
            f"data.root={root}",
            "data.dataset=coco",
            f"model.backbone={tiny_clip_dir}",
            "model.join_layer=0",
            "data.batch_size=2",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "eval.ks=[1,2]",
            "eval.rerank_ks=[2]",
            "eval.val_methods=[rerank@2]",
            "eval.monitor=val/rerank@2/rsum",
            "eval.cross_all=false",
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/rerank@2/rsum"] <= 400
