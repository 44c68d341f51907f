"""The synthetic dataset's pixels: shapes, colours, layout, twins, determinism, cache; regions unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from retrerank.config import ConfigError, SyntheticConfig
from retrerank.data.records import RetrievalSplit
from retrerank.data.synthetic import COLOURS, SHAPES, Obj, generate_synthetic, load_synthetic
from retrerank.data.synthetic.generate import parse_combos
from retrerank.data.synthetic.paint import RGB, paint
from retrerank.data.synthetic.scenes import make_scenes, prototypes, relation_holds, render

CFG = SyntheticConfig(n_train=30, n_val=5, n_test=10, feature_dim=8, image_size=48)


@pytest.fixture(scope="module")
def generated() -> dict[str, RetrievalSplit]:
    return generate_synthetic(CFG)


def draw(scene, cfg: SyntheticConfig = CFG, seed: int = 0):
    """A scene's regions and pixels, on generators of its own."""
    regions = render(scene, prototypes(cfg), cfg, np.random.default_rng(seed))
    return regions, paint(scene, regions, cfg.image_size, np.random.default_rng(seed))


def centre(box: np.ndarray, size: int) -> tuple[int, int]:
    """(row, col) of the pixel at the centre of a normalised box."""
    return int((box[1] + box[3]) / 2 * size), int((box[0] + box[2]) / 2 * size)


def test_pixels_shape_and_dtype(generated) -> None:
    for split in generated.values():
        for im in split.images:
            assert im.pixels.dtype == np.uint8 and im.pixels.shape == (48, 48, 3)
    assert len({im.pixels.tobytes() for im in generated["train"].images}) == CFG.n_train


def test_regions_and_captions_are_those_from_before_pixels() -> None:
    """Painting draws from its own generator: these digests are of the data before pixels existed."""
    expected = {
        "train": "fb2e75b42b99865a",
        "val": "a42575eaffe30fd9",
        "test": "813d251435f5b40b",
        "novel": "f0873ffa3dfd08a0",
    }
    got = {}
    for name, split in generate_synthetic(SyntheticConfig(n_train=20, n_val=5, n_test=10, feature_dim=8)).items():
        h = hashlib.sha256()
        for im in split.images:
            h.update(im.image_id.encode())
            h.update(np.ascontiguousarray(im.features, "<f4").tobytes())
            h.update(np.ascontiguousarray(im.boxes, "<f4").tobytes())
        for c in split.captions:
            h.update(f"{c.caption_id}\t{c.image_id}\t{c.lang}\t{c.text}\n".encode())
        got[name] = h.hexdigest()[:16]
    assert got == expected


def test_image_size_does_not_change_regions(generated) -> None:
    other = generate_synthetic(dataclasses.replace(CFG, image_size=16))["test"]
    assert other.images[0].pixels.shape == (16, 16, 3)
    for a, b in zip(generated["test"].images, other.images):
        assert np.array_equal(a.features, b.features) and np.array_equal(a.boxes, b.boxes)
    assert other.texts == generated["test"].texts


def test_filled_shapes_have_their_colour_at_the_box_centre() -> None:
    scenes = make_scenes(CFG, 60, random.Random(0), parse_combos(CFG), novel=False)
    checked = 0
    for i, (scene, _) in enumerate(scenes):
        regions, pixels = draw(scene, seed=i)
        for obj, box in zip(scene, regions.object_boxes):
            if SHAPES[obj.shape] in ("square", "circle"):
                rgb = pixels[centre(box, CFG.image_size)].astype(int)
                assert np.abs(rgb - RGB[COLOURS[obj.colour]]).max() <= 12, (obj, rgb)
                checked += 1
    assert checked > 20


def test_colours_are_distinct_and_clutter_is_grey() -> None:
    rgb = np.array(list(RGB.values()))
    assert set(RGB) == set(COLOURS)
    assert min(np.abs(a - b).max() for i, a in enumerate(rgb) for b in rgb[i + 1 :]) >= 60
    assert (rgb.max(1) - rgb.min(1) >= 120).all()  # saturated: far from any grey
    scenes = make_scenes(CFG, 30, random.Random(1), parse_combos(CFG), novel=False)
    size = CFG.image_size
    for i, (scene, _) in enumerate(scenes):
        regions, pixels = draw(scene, seed=i)
        outside = np.ones((size, size), bool)
        for box in regions.object_boxes:
            x1, y1 = np.floor(box[:2] * size).astype(int)
            x2, y2 = np.ceil(box[2:] * size).astype(int)
            outside[y1:y2, x1:x2] = False
        rest = pixels[outside].astype(int)
        assert (rest.max(1) - rest.min(1) <= 10).all() and rest.min() >= 150


def test_colour_swapped_twins_look_different() -> None:
    scenes = make_scenes(CFG, 200, random.Random(2), parse_combos(CFG), novel=False)
    swaps = [
        (s, t)
        for s, t in scenes
        if t is not None and [(o.shape, o.size, o.cell) for o in s] == [(o.shape, o.size, o.cell) for o in t]
    ]
    assert len(swaps) > 10
    for k, (scene, twin) in enumerate(swaps):
        regions, pixels = draw(scene, seed=k)  # the twin in the very same boxes, with the same jitter
        twin_pixels = paint(twin, regions, CFG.image_size, np.random.default_rng(k))
        assert not np.array_equal(pixels, twin_pixels)
        for a, b, box in zip(scene, twin, regions.object_boxes):
            if a.colour != b.colour:  # the swapped objects show their colours
                at = centre(box, CFG.image_size)
                assert (
                    np.abs(pixels[at].astype(int) - RGB[COLOURS[a.colour]]).sum()
                    < np.abs(pixels[at].astype(int) - RGB[COLOURS[b.colour]]).sum()
                )
                assert np.abs(twin_pixels[at].astype(int) - RGB[COLOURS[b.colour]]).max() <= 30


def test_relations_are_visible() -> None:
    """A red square in the top left cell, a blue circle in the middle right one: left of and above."""
    red, blue = COLOURS.index("red"), COLOURS.index("blue")
    scene = (Obj(SHAPES.index("square"), red, 1, 0), Obj(SHAPES.index("circle"), blue, 1, 5))
    assert relation_holds(scene[0], scene[1], "left") and relation_holds(scene[0], scene[1], "above")
    for seed in range(5):
        _, pixels = draw(scene, seed=seed)
        where = {}
        for colour in (red, blue):
            near = np.abs(pixels.astype(int) - RGB[COLOURS[colour]]).max(-1) <= 30
            assert near.sum() > 20
            rows, cols = np.nonzero(near)
            where[colour] = rows.mean(), cols.mean()
        assert where[red][1] < where[blue][1]  # left of
        assert where[red][0] < where[blue][0]  # above


def test_same_config_same_pixels_other_seed_other_pixels(generated) -> None:
    again = generate_synthetic(CFG)
    for name in generated:
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(generated[name].images, again[name].images))
    other = generate_synthetic(dataclasses.replace(CFG, seed=1))
    assert not any(np.array_equal(a.pixels, b.pixels) for a, b in zip(generated["val"].images, other["val"].images))


def test_cache_round_trips_pixels_as_views(generated, tmp_path: Path) -> None:
    load_synthetic(CFG, tmp_path)  # writes the cache
    loaded = load_synthetic(CFG, tmp_path)  # reads it
    for name in generated:
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(generated[name].images, loaded[name].images))
    images = loaded["train"].images
    assert images[1].pixels.base is not None and images[1].pixels.base is images[0].pixels.base  # no copy per image
    empty = load_synthetic(dataclasses.replace(CFG, held_out_combos=[]), tmp_path)["novel"]
    assert empty.images == []


@pytest.mark.parametrize("size", [0, 15])
def test_small_image_size_is_named(size: int, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"synthetic\.image_size"):
        load_synthetic(dataclasses.replace(CFG, image_size=size), tmp_path)
