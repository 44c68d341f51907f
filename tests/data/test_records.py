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


def test_without_also_each_caption_is_relevant_to_its_own_image_only(split: RetrievalSplit) -> None:
    assert not split.exact_relevance
    assert [rows.tolist() for rows in split.caption_relevant] == [[2], [0], [0], [1], [0]]
    assert all(rows.dtype == np.int64 for rows in split.caption_relevant)


@pytest.fixture
def exact() -> RetrievalSplit:
    """Captions also true of other images: an unknown id, the own id and a duplicate in `also`;
    image e has no caption of its own, only one that is also true of it."""
    images = [image(i) for i in "abcde"]
    captions = [
        CaptionRecord("c0", "a", "x", "en", ("c", "zzz")),
        CaptionRecord("c1", "b", "x", "en", ("e",)),
        CaptionRecord("c2", "c", "x", "en", ("a", "c", "a", "d")),
        CaptionRecord("c3", "d", "x", "de", ("b",)),
        CaptionRecord("c4", "a", "x", "de"),
    ]
    return RetrievalSplit("toy", images, captions)


def test_caption_relevant_resolves_also_own_row_first(exact: RetrievalSplit) -> None:
    assert exact.exact_relevance
    assert [rows.tolist() for rows in exact.caption_relevant] == [[0, 2], [1, 4], [2, 0, 3], [3, 1], [0]]
    assert exact.caption_image_index.tolist() == [0, 1, 2, 3, 0]  # still the own image
    assert [rows.tolist() for rows in exact.image_captions()] == [[0, 2, 4], [1, 3], [0, 2], [2, 3], [1]]
    assert len({exact.captions[0], exact.captions[0]}) == 1  # hashable with `also`


def test_filter_languages_ignores_also_of_dropped_images(exact: RetrievalSplit) -> None:
    english = exact.filter_languages(["en"])  # d and e have no English caption of their own
    assert [im.image_id for im in english.images] == ["a", "b", "c"]
    assert english.captions[2].also == ("a", "c", "a", "d")  # the records are kept as they are
    assert [rows.tolist() for rows in english.caption_relevant] == [[0, 2], [1], [2, 0]]
    assert [rows.tolist() for rows in english.image_captions()] == [[0, 2], [1], [0, 2]]
    german = exact.filter_languages(["de"])  # b is gone: nothing left beyond the own images
    assert [im.image_id for im in german.images] == ["a", "d"]
    assert not german.exact_relevance
    assert [rows.tolist() for rows in german.caption_relevant] == [[1], [0]]
    assert [rows.tolist() for rows in german.image_captions()] == [[1], [0]]


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
