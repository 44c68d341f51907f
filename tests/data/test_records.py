"""Records, the many-to-many ground truth of a split, and image collation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrerank.data.collate import collate_images
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit


def image(image_id: str, regions: int = 2, dim: int = 4) -> ImageRecord:
    features = np.arange(regions * dim, dtype=np.float32).reshape(regions, dim) + 1
    boxes = np.tile(np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), (regions, 1))
    return ImageRecord(image_id, features, boxes)


@pytest.fixture
def split() -> RetrievalSplit:
    images = [image("a"), image("b"), image("c")]
    captions = [
        CaptionRecord("c0", "c", "a cat", "en"),
        CaptionRecord("a0", "a", "a dog", "en"),
        CaptionRecord("a1", "a", "ein Hund", "de"),
        CaptionRecord("b0", "b", "eine Katze", "de"),
        CaptionRecord("a2", "a", "a hound", "en"),
    ]
    return RetrievalSplit("toy", images, captions)


def test_caption_image_index_and_image_captions(split: RetrievalSplit) -> None:
    assert split.caption_image_index.tolist() == [2, 0, 0, 1, 0]
    truth = [rows.tolist() for rows in split.image_captions()]
    assert truth == [[1, 2, 4], [3], [0]]
    assert split.texts[0] == "a cat"


def test_image_without_captions_has_empty_ground_truth() -> None:
    split = RetrievalSplit("toy", [image("a"), image("b")], [CaptionRecord("a0", "a", "x")])
    assert [rows.tolist() for rows in split.image_captions()] == [[0], []]


def test_filter_languages_drops_images_without_captions(split: RetrievalSplit) -> None:
    english = split.filter_languages(["en"])
    assert [im.image_id for im in english.images] == ["a", "c"]
    assert [c.caption_id for c in english.captions] == ["c0", "a0", "a2"]
    # rows refer to the filtered image list
    assert english.caption_image_index.tolist() == [1, 0, 0]
    both = split.filter_languages(["en", "de"])
    assert len(both.captions) == 5 and len(both.images) == 3


def test_filter_languages_with_no_match_names_split_and_languages(split: RetrievalSplit) -> None:
    with pytest.raises(ValueError, match=r"'toy'.*\['fr'\]"):
        split.filter_languages(["fr"])


def test_duplicate_image_id_is_named() -> None:
    with pytest.raises(ValueError, match="duplicate image id 'a'"):
        RetrievalSplit("toy", [image("a"), image("a")], [])


def test_unknown_image_id_names_caption_and_image() -> None:
    with pytest.raises(ValueError, match="caption 'x0' refers to unknown image 'zzz'"):
        RetrievalSplit("toy", [image("a")], [CaptionRecord("x0", "zzz", "text")])


def test_collate_pads_to_largest_region_count() -> None:
    batch = collate_images([image("a", regions=2), image("b", regions=5)])
    assert batch["features"].shape == (2, 5, 4) and batch["features"].dtype == torch.float32
    assert batch["boxes"].shape == (2, 5, 4)
    assert batch["region_mask"].tolist() == [[True, True, False, False, False], [True] * 5]
    assert torch.equal(batch["features"][0, :2], torch.from_numpy(image("a").features))
    assert batch["features"][0, 2:].abs().sum() == 0 and batch["boxes"][0, 2:].abs().sum() == 0


def test_collate_rejects_mixed_widths_and_empty_batches() -> None:
    with pytest.raises(ValueError, match="different feature widths"):
        collate_images([image("a", dim=4), image("b", dim=8)])
    with pytest.raises(ValueError, match="empty"):
        collate_images([])
