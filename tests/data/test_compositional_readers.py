"""The compositional benchmarks read from tiny copies of their published files (Winoground's examples.jsonl and
images/, SugarCrepe's seven category files and val2017/, ARO's two JSON lists and images/), and every broken
input stopped with one line that names the file and the record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from retrerank.data.compositional import PAIR_OF_PAIRS, TRUE_FALSE, load_benchmark
from retrerank.data.compositional.aro import MIN_PAIR_ITEMS, CroppedImage, load_aro
from retrerank.data.compositional.sugarcrepe import CATEGORIES, load_sugarcrepe
from retrerank.data.compositional.winoground import load_winoground
from retrerank.data.errors import BadRecords, DataError


def write_image(path: Path, colour=(200, 30, 30), size=(12, 8)) -> Path:
    """A small RGB picture (PNG or JPEG by the suffix), one colour; size is (width, height)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ---------------------------------------------------------------------------------------------- Winoground
WINOGROUND = [
    {
        "id": 0,
        "image_0": "ex_0_img_0",
        "image_1": "ex_0_img_1",
        "caption_0": "an old person kisses a young person",
        "caption_1": "a young person kisses an old person",
        "tag": "Adjective-Age",
        "secondary_tag": "",
        "num_main_preds": 1,
        "collapsed_tag": "Object",
    },
    {
        "id": 1,
        "image_0": "ex_1_img_0",
        "image_1": "ex_1_img_1",
        "caption_0": "the dog is on the left of the cat",
        "caption_1": "the cat is on the left of the dog",
        "tag": "Noun",
        "secondary_tag": "Symbolic",
        "num_main_preds": 1,
        "collapsed_tag": "Relation",
    },
    {
        "id": 2,
        "image_0": "ex_2_img_0",
        "image_1": "ex_2_img_1",
        "caption_0": "a red ball hits a blue box that falls",
        "caption_1": "a blue ball hits a red box that falls",
        "tag": "Relation",
        "secondary_tag": "",
        "num_main_preds": 2,
        "collapsed_tag": "Both",
    },
]


def write_winoground(root: Path, examples: list | None = None) -> Path:
    """examples.jsonl (one object per line) and images/<name>.png, each image its own colour."""
    examples = WINOGROUND if examples is None else examples
    root.mkdir(parents=True, exist_ok=True)
    (root / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    for n, example in enumerate(examples):
        for k in (0, 1):
            write_image(root / "images" / f"{example[f'image_{k}']}.png", (40 * n, 100 * k, 90))
    return root


def test_winoground_items_captions_images_and_categories(tmp_path):
    root = write_winoground(tmp_path / "winoground")
    bench = load_winoground(root)
    assert bench.name == "winoground" and bench.kind == PAIR_OF_PAIRS
    assert [item.item_id for item in bench.items] == ["0", "1", "2"]
    first = bench.items[0]
    assert [bench.texts[c] for c in first.captions] == [WINOGROUND[0]["caption_0"], WINOGROUND[0]["caption_1"]]
    assert [bench.images[i].path for i in first.images] == [root / "images" / f"ex_0_img_{k}.png" for k in (0, 1)]
    assert bench.images[first.images[1]].pixels.shape == (8, 12, 3)  # decoded on access
    assert [item.categories for item in bench.items] == [
        ("object", "main_preds_1"),
        ("relation", "main_preds_1"),
        ("both", "main_preds_2"),
    ]
    assert bench.categories == ["object", "relation", "both", "main_preds_1", "main_preds_2"]
    assert load_benchmark("winoground", root).items == bench.items


def test_sugarcrepe_and_aro_are_one_image_with_a_true_and_a_false_caption(tmp_path):
    sugar = load_sugarcrepe(write_sugarcrepe(tmp_path / "sugarcrepe"))
    relation = load_aro(write_aro(tmp_path / "aro"), "relation")
    for bench in (sugar, relation):
        assert bench.kind == TRUE_FALSE and all(len(i.images) == 1 and len(i.captions) == 2 for i in bench.items)


def winoground_error(root: Path, examples: list, tmp_path: Path) -> str:
    write_winoground(root, examples)
    with pytest.raises(DataError) as err:
        load_winoground(root)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_winoground_bad_inputs_name_the_file_and_line(tmp_path):
    root = tmp_path / "w"
    path = root / "examples.jsonl"
    with pytest.raises(DataError, match=re.escape(f"missing file: {path}")):
        load_winoground(root)

    no_key = [WINOGROUND[0], {k: v for k, v in WINOGROUND[1].items() if k != "caption_1"}]
    assert winoground_error(root, no_key, tmp_path) == f"{path}:2: no 'caption_1' (a Winoground example has " + (
        "id, image_0, image_1, caption_0, caption_1, collapsed_tag, num_main_preds)"
    )
    wrong = [WINOGROUND[0], WINOGROUND[1], dict(WINOGROUND[2], caption_0=3)]
    assert winoground_error(root, wrong, tmp_path) == f"{path}:3: 'caption_0' must be a non-empty string, got 3"
    preds = [dict(WINOGROUND[0], num_main_preds="one")]
    assert winoground_error(root, preds, tmp_path).startswith(f"{path}:1: 'num_main_preds' must be a whole number")

    write_winoground(root)
    (root / "images" / "ex_1_img_1.png").unlink()
    with pytest.raises(DataError, match=re.escape(f"{path}:2: image_1 'ex_1_img_1': image file not found: ")):
        load_winoground(root)

    write_winoground(root)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"id": 1, "image_0": ', lines[2]]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2:") + r".*malformed JSON"):
        load_winoground(root)
    path.write_text("\n".join([lines[0], "[1, 2]"]) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not a JSON object")):
        load_winoground(root)
    path.write_text("")
    with pytest.raises(DataError, match=re.escape(f"{path}: no winoground items to score")):
        load_winoground(root)


def test_winoground_without_its_images_folder_and_lenient_loading(tmp_path):
    root = write_winoground(tmp_path / "w")
    path = root / "examples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{broken", lines[2]]) + "\n")
    bad = BadRecords(strict=False)
    bench = load_winoground(root, bad)
    assert [item.item_id for item in bench.items] == ["0", "2"] and bad.counts == {"malformed json": 1}
    for png in (root / "images").iterdir():
        png.unlink()
    (root / "images").rmdir()
    with pytest.raises(DataError, match=re.escape(f"missing folder: {root / 'images'}")):
        load_winoground(root)


# ---------------------------------------------------------------------------------------------- SugarCrepe
def write_sugarcrepe(root: Path, records: dict | None = None) -> Path:
    """One file per category, two records each; every category's second record shares its image with the first
    category's first record (as SugarCrepe's files share COCO images)."""
    root.mkdir(parents=True, exist_ok=True)
    shared = "000000544519.jpg"
    write_image(root / "val2017" / shared, (10, 200, 10))
    for n, category in enumerate(CATEGORIES):
        own = f"{n + 1:012d}.jpg"
        write_image(root / "val2017" / own, (20 * n, 10, 10))
        data = {
            str(2 * n): {"filename": own, "caption": f"{category} true", "negative_caption": f"{category} false"},
            str(2 * n + 1): {"filename": shared, "caption": "a girl with a green shirt", "negative_caption": "no"},
        }
        if records and category in records:
            data = records[category]
        (root / f"{category}.json").write_text(json.dumps(data, indent=4), encoding="utf-8")
    return root


def test_sugarcrepe_items_by_category_with_shared_images(tmp_path):
    root = write_sugarcrepe(tmp_path / "sugarcrepe")
    bench = load_sugarcrepe(root)
    assert len(bench.items) == 14 and len(bench.images) == 8  # the shared image is stored once
    assert bench.categories == bench.macro == list(CATEGORIES)
    first = bench.items[0]
    assert first.item_id == "replace_obj/0" and first.categories == ("replace_obj",)
    assert [bench.texts[c] for c in first.captions] == ["replace_obj true", "replace_obj false"]
    image = bench.images[first.images[0]]
    assert image.path == root / "val2017" / "000000000001.jpg" and image.image_id == "1"  # the COCO number
    assert image.pixels.shape == (8, 12, 3)


def sugarcrepe_error(root: Path, records: dict) -> str:
    write_sugarcrepe(root, records)
    with pytest.raises(DataError) as err:
        load_sugarcrepe(root)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_sugarcrepe_bad_inputs_name_the_file_and_record(tmp_path):
    root = write_sugarcrepe(tmp_path / "s")
    (root / "swap_att.json").unlink()
    with pytest.raises(DataError, match=re.escape(f"missing file: {root / 'swap_att.json'}")):
        load_sugarcrepe(root)
    path = root / "add_att.json"
    no_key = {"7": {"filename": "000000544519.jpg", "caption": "a dog"}}
    message = sugarcrepe_error(root, {"add_att": no_key})
    assert message == f"{path}: record '7': no 'negative_caption' (a record has filename, caption, negative_caption)"
    empty = {"7": {"filename": "000000544519.jpg", "caption": " ", "negative_caption": "a cat"}}
    assert (
        sugarcrepe_error(root, {"add_att": empty})
        == f"{path}: record '7': 'caption' must be a non-empty string, got ' '"
    )
    absent = {"7": {"filename": "000000000404.jpg", "caption": "a dog", "negative_caption": "a cat"}}
    image = root / "val2017" / "000000000404.jpg"
    assert sugarcrepe_error(root, {"add_att": absent}) == f"{path}: record '7': image file not found: {image}"
    assert sugarcrepe_error(root, {"add_att": ["a list"]}).startswith(f"{path}: expected a JSON object of records")
    write_sugarcrepe(root)
    path.write_text('{\n  "0": {"filename": "x.jpg",\n  "caption": }\n}')
    with pytest.raises(DataError, match=re.escape(f"{path}:3:") + r"\d+: malformed JSON"):
        load_sugarcrepe(root)


# ---------------------------------------------------------------------------------------------- ARO
def aro_record(image: str, relation: str | None = None, attributes: list | None = None, **box) -> dict:
    record = {"image_path": image, "bbox_x": 2, "bbox_y": 1, "bbox_w": 6, "bbox_h": 4}
    record |= box | {"true_caption": "the horse is eating the grass", "false_caption": "the grass is eating the horse"}
    return record | ({"relation_name": relation} if relation is not None else {"attributes": attributes})


def write_aro(root: Path, relation: list | None = None, attribution: list | None = None) -> Path:
    """images/ (a 12 x 8 picture whose 6 x 4 box at (2, 1) has its own colour) and both JSON lists: relations
    "on" (2 items), "sitting on" and "next to" (one of the relations ARO's macro leaves out); attribute pairs
    white/black (MIN_PAIR_ITEMS items) and red/blue (one)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    picture = np.zeros((8, 12, 3), np.uint8)
    picture[1:5, 2:8] = (250, 250, 0)
    Image.fromarray(picture).save(root / "images" / "2315375.jpg", quality=100, subsampling=0)
    write_image(root / "images" / "2400000.jpg")
    relation = relation or [
        aro_record("2315375.jpg", "on"),
        aro_record("2315375.jpg", "on", bbox_w=3),
        aro_record("2400000.jpg", "sitting on"),
        aro_record("2400000.jpg", "next to"),
    ]
    attribution = attribution or [aro_record("2315375.jpg", attributes=["white", "black"])] * MIN_PAIR_ITEMS + [
        aro_record("2400000.jpg", attributes=["red", "blue"])
    ]
    (root / "visual_genome_relation.json").write_text(json.dumps(relation), encoding="utf-8")
    (root / "visual_genome_attribution.json").write_text(json.dumps(attribution), encoding="utf-8")
    return root


def test_aro_relation_crops_each_image_to_its_box_and_reports_relations_as_aro_does(tmp_path):
    root = write_aro(tmp_path / "aro")
    bench = load_aro(root, "relation")
    assert bench.name == "aro_relation" and len(bench.items) == 4
    assert [item.categories[0] for item in bench.items] == ["on", "on", "sitting_on", "next_to"]
    assert bench.categories == bench.macro == ["on", "sitting_on"]  # "next to" is left out, as ARO does
    crop = bench.images[bench.items[0].images[0]]
    assert isinstance(crop, CroppedImage) and crop.box == (2, 1, 8, 5)
    pixels = crop.pixels
    assert pixels.shape == (4, 6, 3) and pixels.mean(axis=(0, 1))[2] < 40  # the yellow box alone
    assert bench.images[bench.items[1].images[0]].pixels.shape == (4, 3, 3)  # another box: another image
    assert len(bench.images) == 3  # "sitting on" and "next to" share one image and box
    assert [bench.texts[c] for c in bench.items[0].captions] == [
        "the horse is eating the grass",
        "the grass is eating the horse",
    ]


def test_aro_attribution_reports_attribute_pairs_with_enough_items(tmp_path):
    bench = load_benchmark("aro_attribution", write_aro(tmp_path / "aro"))
    assert len(bench.items) == MIN_PAIR_ITEMS + 1 and len(bench.images) == 2
    assert bench.items[0].categories == ("white_black",) and bench.items[-1].categories == ("red_blue",)
    assert bench.categories == bench.macro == ["white_black"]


def test_aro_bad_inputs_name_the_file_and_record(tmp_path):
    root = tmp_path / "aro"
    write_aro(root)
    path = root / "visual_genome_relation.json"

    def error(records: list) -> str:
        path.write_text(json.dumps(records))
        with pytest.raises(DataError) as err:
            load_aro(root, "relation")
        assert "\n" not in str(err.value)
        return str(err.value)

    good = aro_record("2315375.jpg", "on")
    no_key = {k: v for k, v in good.items() if k != "false_caption"}
    assert error([good, no_key]) == f"{path}: record 1: no 'false_caption' (a record has image_path, bbox_x, " + (
        "bbox_y, bbox_w, bbox_h, true_caption, false_caption, relation_name)"
    )
    assert error([aro_record("2315375.jpg", "on", bbox_h=0)]).startswith(
        f"{path}: record 0: the box must be numbers with bbox_w, bbox_h > 0, got bbox_x=2, bbox_y=1, bbox_w=6, bbox_h=0"
    )
    assert error([aro_record("2315375.jpg", "on", bbox_x="2")]).startswith(f"{path}: record 0: the box must be")
    assert error([good, good, aro_record("nowhere.jpg", "on")]) == (
        f"{path}: record 2: image file not found: {root / 'images' / 'nowhere.jpg'}"
    )
    assert (
        error([aro_record("2315375.jpg", "")])
        == f"{path}: record 0: 'relation_name' must be a non-empty string, got ''"
    )
    assert error({"0": good}).startswith(f"{path}: expected a JSON list of records")
    attribution = root / "visual_genome_attribution.json"
    attribution.write_text(json.dumps([aro_record("2315375.jpg", attributes=["white"])]))
    with pytest.raises(DataError, match=re.escape(f"{attribution}: record 0: 'attributes' must be a list of two")):
        load_aro(root, "attribution")
    attribution.unlink()
    with pytest.raises(DataError, match=re.escape(f"missing file: {attribution}")):
        load_aro(root, "attribution")
    with pytest.raises(ValueError, match="no ARO variant"):
        load_aro(root, "order")
