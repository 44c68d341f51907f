"""The synthetic dataset: sizes, ids, features, held-out combos, confusers, determinism, cache."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retrerank.config import ConfigError, SyntheticConfig
from retrerank.data import synthetic
from retrerank.data.records import RetrievalSplit
from retrerank.data.synthetic import COLOURS, SHAPES, Desc, Item, load_synthetic, realize
from retrerank.data.synthetic.generate import also_true_of, parse_combos, plan_split
from retrerank.data.synthetic.scenes import make_scenes

CFG = SyntheticConfig(n_train=40, n_val=10, n_test=40, feature_dim=16)
COLOUR = "|".join(COLOURS)
SHAPE = "|".join(SHAPES)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, RetrievalSplit]:
    return load_synthetic(CFG, tmp_path_factory.mktemp("data"))


def own(split: RetrievalSplit, row: int) -> list[int]:
    """The caption rows written for image `row` (image_captions() adds those also true of it)."""
    return np.flatnonzero(split.caption_image_index == row).tolist()


def english(split: RetrievalSplit, row: int) -> list[str]:
    return [split.captions[j].text for j in own(split, row) if split.captions[j].lang == "en"]


def test_split_sizes_and_captions_per_language(splits: dict[str, RetrievalSplit]) -> None:
    assert {name: len(s.images) for name, s in splits.items()} == {"train": 40, "val": 10, "test": 40, "novel": 40}
    for split in splits.values():
        for row, rows in enumerate(split.image_captions()):
            langs = Counter(split.captions[j].lang for j in own(split, row))
            assert langs == {lang: CFG.captions_per_image for lang in CFG.languages}
            assert set(own(split, row)) <= set(rows.tolist())
        assert all(c.text.strip() and "{" not in c.text and "  " not in c.text for c in split.captions)


def test_ids_are_unique_and_readable(splits: dict[str, RetrievalSplit]) -> None:
    images = [im.image_id for s in splits.values() for im in s.images]
    captions = [c.caption_id for s in splits.values() for c in s.captions]
    assert len(set(images)) == len(images) and len(set(captions)) == len(captions)
    assert splits["train"].images[3].image_id == "syn-train-000003"
    assert all(re.fullmatch(rf"{c.image_id}-{c.lang}-[0-4]", c.caption_id) for c in splits["val"].captions)


def test_features_and_boxes(splits: dict[str, RetrievalSplit]) -> None:
    counts = []
    for split in splits.values():
        for im in split.images:
            r = len(im.features)
            counts.append(r)
            assert im.features.dtype == np.float32 and im.features.shape == (r, CFG.feature_dim)
            assert im.boxes.dtype == np.float32 and im.boxes.shape == (r, 4)
            assert (im.boxes >= 0).all() and (im.boxes <= 1).all()
            assert (im.boxes[:, 2] > im.boxes[:, 0]).all() and (im.boxes[:, 3] > im.boxes[:, 1]).all()
    assert min(counts) >= CFG.min_objects and max(counts) <= CFG.max_objects + CFG.max_distractors
    assert len(set(counts)) > 3  # the region count varies


def test_held_out_combos_only_in_novel(splits: dict[str, RetrievalSplit]) -> None:
    held_out = re.compile("|".join(rf"\b{combo}\b" for combo in CFG.held_out_combos))
    for name in ("train", "val", "test"):
        assert not any(held_out.search(c.text) for c in splits[name].captions if c.lang == "en")
    novel = splits["novel"]
    for row in range(len(novel.images)):  # every caption of a novel image names a held-out combo
        assert all(held_out.search(text) for text in english(novel, row))


def test_binding_confusers_are_common(splits: dict[str, RetrievalSplit]) -> None:
    """Images whose captions use the same colour and shape words, bound differently."""
    test = splits["test"]
    words = []
    for row in range(len(test.images)):
        text = " ".join(english(test, row))
        bag = (frozenset(re.findall(rf"\b(?:{COLOUR})\b", text)), frozenset(re.findall(rf"\b(?:{SHAPE})\b", text)))
        words.append((bag, frozenset(re.findall(rf"\b(?:{COLOUR}) (?:{SHAPE})\b", text))))
    confused = {
        i
        for i, (bag, pairs) in enumerate(words)
        for j, (other_bag, other_pairs) in enumerate(words)
        if i != j and bag == other_bag and pairs != other_pairs
    }
    assert len(confused) >= 0.15 * len(test.images)


def test_captions_tell_twins_apart() -> None:
    rnd = random.Random(0)
    scenes = make_scenes(CFG, 200, rnd, parse_combos(CFG), novel=False)
    twins = [(s, t) for s, t in scenes if t is not None]
    assert len(twins) > 50
    for scene, twin in twins:
        for item in synthetic.plan_captions(scene, twin, 5, rnd):
            assert synthetic.holds(item, scene) and not synthetic.holds(item, twin)


def obj(colour: str, shape: str, size: int, cell: int) -> synthetic.Obj:
    return synthetic.Obj(SHAPES.index(shape), COLOURS.index(colour), size, cell)


def desc(colour: str, shape: str, size: int | None = None, cell: int | None = None) -> Desc:
    return Desc(SHAPES.index(shape), COLOURS.index(colour), size, cell)


def test_scenes_true_of_hand_made_scenes() -> None:
    small, large = 0, 1
    scenes = [  # cells: row * 3 + col
        (obj("red", "circle", small, 0), obj("blue", "square", large, 2)),  # red circle left of blue square
        (obj("blue", "circle", small, 0), obj("red", "square", large, 2)),  # the colour-swapped twin
        (obj("red", "circle", large, 5), obj("blue", "square", small, 3), obj("green", "star", small, 7)),
        (obj("green", "star", large, 4),),
    ]
    red_circle, blue_square, green_star = desc("red", "circle"), desc("blue", "square"), desc("green", "star")
    cases = [
        (Item("obj", (red_circle,)), (0, 2)),
        (Item("obj", (desc("red", "circle", large),)), (2,)),
        (Item("obj", (desc("red", "circle", small, 0),)), (0,)),
        (Item("obj", (desc("red", "square"),)), (1,)),
        (Item("obj", (desc("yellow", "cross"),)), ()),
        (Item("obj", (green_star,)), (2, 3)),
        # both 0 and 2 have both objects; the relation holds in 0 only (in 2 the circle is right)
        (Item("rel", (red_circle, blue_square), "left"), (0,)),
        (Item("rel", (red_circle, blue_square), "right"), (2,)),
        (Item("rel", (red_circle, green_star), "above"), (2,)),
        (Item("and", (red_circle, green_star)), (2,)),
        (Item("and", (red_circle, blue_square)), (0, 2)),
        # a list names every object: not true of scene 2, which has a third
        (Item("list", (red_circle, blue_square)), (0,)),
        (Item("list", (desc("green", "star", large),)), (3,)),
    ]
    items = [item for item, _ in cases]
    assert synthetic.scenes_true_of(items, scenes) == [rows for _, rows in cases]
    for item, rows in cases:  # the same as asking holds of every scene
        assert rows == tuple(r for r, scene in enumerate(scenes) if synthetic.holds(item, scene))
    # a plan's `also` rows: the scenes other than its own that each of its captions holds for
    plans = [[cases[0][0], cases[6][0]], [cases[3][0]], [cases[0][0], cases[5][0]], [cases[5][0]]]
    assert also_true_of(plans, scenes) == [[(2,), ()], [()], [(0,), (3,)], [(2,)]]


def test_also_is_exactly_the_other_scenes_a_caption_holds_for(splits: dict[str, RetrievalSplit]) -> None:
    held_out = parse_combos(CFG)
    sizes = {"train": CFG.n_train, "val": CFG.n_val, "test": CFG.n_test, "novel": CFG.n_test}
    for name, split in splits.items():
        scenes, plans = plan_split(CFG, name, sizes[name], held_out)
        assert len(scenes) == len(split.images)
        parallel = {}
        for j, caption in enumerate(split.captions):
            row, slot = int(split.caption_image_index[j]), int(caption.caption_id.rsplit("-", 1)[1])
            item = plans[row][slot]
            expected = [r for r, (scene, _) in enumerate(scenes) if r != row and synthetic.holds(item, scene)]
            assert caption.also == tuple(split.images[r].image_id for r in expected)  # by row, brute force
            assert split.caption_relevant[j].tolist() == [row] + expected
            parallel.setdefault((caption.image_id, slot), set()).add(caption.also)
        assert all(len(alsos) == 1 for alsos in parallel.values())  # translations share `also`
    assert splits["train"].exact_relevance
    assert sum(bool(c.also) for c in splits["train"].captions) > 0.15 * len(splits["train"].captions)  # common


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "a red circle left of a blue square"),
        ("de", "ein roter Kreis links von einem blauen Quadrat"),
        ("fr", "un cercle rouge à gauche d'un carré bleu"),
        ("cs", "červený kruh vlevo od modrého čtverce"),
    ],
)
def test_relation_captions_are_grammatical(lang: str, expected: str) -> None:
    red_circle = Desc(SHAPES.index("circle"), COLOURS.index("red"), None, None)
    blue_square = Desc(SHAPES.index("square"), COLOURS.index("blue"), None, None)
    texts = {realize(Item("rel", (red_circle, blue_square), "left"), lang, random.Random(s)) for s in range(200)}
    assert expected in texts
    assert not any(bad in text for text in texts for bad in ("de un", "{", " a a"))


def test_noun_phrase_inflection() -> None:
    big_orange_star = Desc(SHAPES.index("star"), COLOURS.index("orange"), 1, None)
    assert synthetic.LANGS["de"].np(big_orange_star, "dat") == "einem großen orangefarbenen Stern"
    assert synthetic.LANGS["fr"].np(big_orange_star, "nom") == "une grande étoile orange"
    assert synthetic.LANGS["cs"].np(big_orange_star, "ins") == "velkou oranžovou hvězdou"
    text = realize(Item("obj", (big_orange_star._replace(size=None),)), "en", random.Random(0))
    assert "an orange star" in text


def test_same_config_same_data_other_seed_other_data(tmp_path: Path, splits) -> None:
    again = load_synthetic(CFG, tmp_path / "again")
    other = load_synthetic(dataclasses.replace(CFG, seed=1), tmp_path / "again")
    fresh = synthetic.generate_synthetic(CFG)  # not through the cache
    for name in splits:
        a, b = splits[name], again[name]
        assert a.captions == b.captions == fresh[name].captions  # `also` included, as tuples
        assert all(
            np.array_equal(x.features, y.features) and np.array_equal(x.boxes, y.boxes)
            for x, y in zip(a.images, b.images)
        )
    assert [c.text for c in other["train"].captions] != [c.text for c in splits["train"].captions]
    assert not any(np.array_equal(x.features, y.features) for x, y in zip(other["test"].images, splits["test"].images))


def test_languages_do_not_change_each_other(splits) -> None:
    only_en = synthetic.generate_synthetic(dataclasses.replace(CFG, languages=["en"]))
    assert {c.lang for c in only_en["val"].captions} == {"en"}
    assert only_en["val"].texts == [c.text for c in splits["val"].captions if c.lang == "en"]


def test_second_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_synthetic(CFG, tmp_path)
    folder = synthetic.cache_dir(CFG, tmp_path)
    assert folder.parent == tmp_path / "synthetic"
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert len(mtimes) == 9  # 4 splits x (arrays, captions) + config.json

    def fail(cfg):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(synthetic.store, "generate_synthetic", fail)  # where ensure_synthetic looks it up
    second = load_synthetic(CFG, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert second["test"].texts == first["test"].texts
    assert synthetic.cache_dir(dataclasses.replace(CFG, feature_noise=0.5), tmp_path) != folder


def test_cache_lines_without_also_still_load(tmp_path: Path) -> None:
    folder = synthetic.ensure_synthetic(CFG, tmp_path)
    path = folder / "val.captions.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(line["also"], list) for line in lines)
    path.write_text(
        "".join(json.dumps({k: v for k, v in line.items() if k != "also"}) + "\n" for line in lines), encoding="utf-8"
    )
    val = load_synthetic(CFG, tmp_path)["val"]
    assert all(c.also == () for c in val.captions) and not val.exact_relevance
    assert [c.caption_id for c in val.captions] == [line["caption_id"] for line in lines]


def test_corrupt_cache_names_the_file(tmp_path: Path) -> None:
    folder = synthetic.ensure_synthetic(CFG, tmp_path)
    (folder / "val.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"val\.npz"):
        load_synthetic(CFG, tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"languages": ["en", "xx"]}, "xx"),
        ({"held_out_combos": ["pink circle"]}, "pink circle"),
        ({"max_objects": 10}, "max_objects"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"twin_fraction": 1.5}, "twin_fraction"),
        ({"list_max_objects": 0}, "list_max_objects"),
    ],
)
def test_invalid_config_is_named(change: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        load_synthetic(dataclasses.replace(CFG, **change), tmp_path)


def test_no_held_out_combos_means_empty_novel_split() -> None:
    splits = synthetic.generate_synthetic(dataclasses.replace(CFG, held_out_combos=[], n_train=5))
    assert len(splits["novel"].images) == 0 and len(splits["test"].images) == CFG.n_test


def test_busy_scenes_get_captions_about_a_part_and_twins_on_request() -> None:
    """list_max_objects: no caption lists every object of a busier scene; twin_fraction: how many
    multi-object scenes come with a near-duplicate twin in their split."""
    busy = dataclasses.replace(CFG, min_objects=3, max_objects=6, list_max_objects=3, twin_fraction=1.0)
    scenes, plans = plan_split(busy, "train", 40, parse_combos(busy))
    sizes = Counter(len(scene) for scene, _ in scenes)
    assert min(sizes) == 3 and max(sizes) == 6
    for (scene, twin), plan in zip(scenes, plans):
        kinds = {item.kind for item in plan}
        assert "list" not in kinds or len(scene) <= 3
        if twin is not None:  # every caption is false of the twin wherever the scene allows it
            assert not any(synthetic.holds(item, twin) for item in plan)
    assert sum(twin is not None for _, twin in scenes) >= 30  # all but scenes whose swaps all fail
    rare = dataclasses.replace(busy, twin_fraction=0.0)
    assert all(twin is None for twin in (t for _, t in plan_split(rare, "train", 40, parse_combos(rare))[0]))


def test_the_new_knobs_at_their_old_values_leave_the_data_as_it_was() -> None:
    """twin_fraction=0.5 and list_max_objects >= max_objects are the data before the knobs existed."""
    cfg = dataclasses.replace(CFG, list_max_objects=9)
    a, b = plan_split(CFG, "train", 40, parse_combos(CFG)), plan_split(cfg, "train", 40, parse_combos(cfg))
    assert a == b


def test_twins_know_each_other_through_the_cache(splits: dict[str, RetrievalSplit]) -> None:
    """ImageRecord.near is each scene's twin (and only that), both ways, as read back from the cache."""
    for name in ("train", "test"):
        scenes, _ = plan_split(CFG, name, len(splits[name].images), parse_combos(CFG))
        split = splits[name]
        row = {image.image_id: i for i, image in enumerate(split.images)}
        assert sum(bool(image.near) for image in split.images) == sum(t is not None for _, t in scenes) > 0
        for i, image in enumerate(split.images):
            if scenes[i][1] is None:
                assert image.near == ()
                continue
            (other,) = image.near
            assert scenes[row[other]][0] == scenes[i][1] and split.images[row[other]].near == (image.image_id,)


def test_foils_of_hand_made_scenes_are_exactly_the_near_misses_that_are_false() -> None:
    """foil_items: binding swaps, the inverted relation and one-attribute changes, none true of the scene."""
    small, large = 0, 1
    scene = (obj("red", "circle", small, 0), obj("blue", "square", large, 2))  # red circle left of blue square
    red_circle, blue_square = desc("red", "circle"), desc("blue", "square")
    rel = Item("rel", (red_circle, blue_square), "left")
    foils = synthetic.foil_items(rel, scene, 100, random.Random(0))
    assert Item("rel", (desc("blue", "circle"), desc("red", "square")), "left") in foils  # the colours swapped
    assert Item("rel", (red_circle, blue_square), "right") in foils  # the relation inverted
    assert Item("rel", (desc("green", "circle"), blue_square), "left") in foils  # another colour
    # 1 swap + 1 inversion + 5 other colours per object (sizes and cells are not named)
    assert len(foils) == len(set(foils)) == 12
    assert not any(synthetic.holds(f, scene) for f in foils)
    # a swap that is true of the scene is no foil: this scene has a blue circle and a red square too
    four = scene + (obj("blue", "circle", small, 3), obj("red", "square", small, 5))
    both = Item("and", (red_circle, blue_square))
    foils = synthetic.foil_items(both, four, 100, random.Random(0))
    assert Item("and", (desc("blue", "circle"), desc("red", "square"))) not in foils
    assert Item("and", (desc("red", "circle", small), desc("blue", "square", large))) not in foils
    assert len(foils) == 5 + 5 - 2 and not any(
        synthetic.holds(f, four) for f in foils
    )  # -2: the blue circle, the red square
    sized = Item("obj", (desc("red", "circle", small, 0),))
    assert set(synthetic.foil_items(sized, scene, 100, random.Random(0))) == (
        {Item("obj", (desc(c, "circle", small, 0),)) for c in COLOURS if c != "red"}
        | {Item("obj", (desc("red", "circle", large, 0),))}
        | {Item("obj", (desc("red", "circle", small, cell),)) for cell in range(1, 9)}
    )
    assert len(synthetic.foil_items(rel, scene, 3, random.Random(0))) == 3  # n at most


def test_every_caption_has_its_foils_false_of_its_own_scene(splits: dict[str, RetrievalSplit]) -> None:
    from retrerank.data.synthetic.generate import plan_foils

    sizes = {"train": CFG.n_train, "val": CFG.n_val, "test": CFG.n_test, "novel": CFG.n_test}
    for name, split in splits.items():
        scenes, plans = plan_split(CFG, name, sizes[name], parse_combos(CFG))
        foils = plan_foils(CFG, name, scenes, plans)
        for j, caption in enumerate(split.captions):
            row, slot = int(split.caption_image_index[j]), int(caption.caption_id.rsplit("-", 1)[1])
            assert len(caption.foils) == len(foils[row][slot]) == CFG.foils_per_caption
            assert all(not synthetic.holds(f, scenes[row][0]) and f != plans[row][slot] for f in foils[row][slot])
            assert caption.text not in caption.foils
    families = Counter()  # binding swaps and inverted relations are common, not drowned by attribute changes
    scenes, plans = plan_split(CFG, "train", CFG.n_train, parse_combos(CFG))
    for plan, item_foils in zip(plans, plan_foils(CFG, "train", scenes, plans)):
        for item, (foil,) in zip(plan, item_foils):
            families[
                "relation"
                if foil.relation != item.relation
                else "binding"
                if sum(a != b for a, b in zip(item.descs, foil.descs)) == 2
                else "attribute"
            ] += 1
    assert families["binding"] > 0.15 * sum(families.values()) and families["relation"] > 0.1 * sum(families.values())


def test_foils_leave_scenes_and_captions_as_they_were(splits: dict[str, RetrievalSplit]) -> None:
    """The foils have their own random streams: without them, every image and caption is the same."""
    plain = synthetic.generate_synthetic(dataclasses.replace(CFG, foils_per_caption=0))
    for name, split in splits.items():
        assert [c.foils for c in plain[name].captions] == [()] * len(split.captions)
        assert [dataclasses.replace(c, foils=()) for c in split.captions] == plain[name].captions
        assert [im.image_id for im in split.images] == [im.image_id for im in plain[name].images]
        assert all(np.array_equal(a.features, b.features) for a, b in zip(split.images, plain[name].images))
    again = synthetic.generate_synthetic(CFG)  # and the cache holds exactly what the generator makes
    assert [c.foils for c in again["train"].captions] == [c.foils for c in splits["train"].captions]
