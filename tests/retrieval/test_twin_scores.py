"""Winoground-style twin scores: which pairs count, the scores worked out by hand, and the keys a run logs."""

import dataclasses
import json

import pytest
import torch

from retrerank.config import DataConfig, SyntheticConfig
from retrerank.data.records import CaptionRecord, RetrievalSplit
from retrerank.data.synthetic import Obj
from retrerank.data.synthetic.captions import holds
from retrerank.data.synthetic.generate import generate_synthetic, parse_combos, plan_split
from retrerank.report import format_twin_markdown, format_twin_table, twin_rows
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.retrieval.twins import (
    TwinPair,
    pair_scores,
    split_twins,
    swapped,
    synthetic_swap_kinds,
    twin_metrics,
    twin_pairs,
    winoground,
)
from tests.retrieval.test_pipeline import FakeBi, FakeCross, make_image


def twin_split() -> RetrievalSplit:
    """img0 and img1 are twins, img2 has none. a0 is written for img0 and false of img1; a1 is also true
    of img1, so it cannot tell them apart; b0 is written for img1; c0 for img2. German a0/b0 as well."""
    images = [
        dataclasses.replace(make_image(0, [1.0, 0.0]), near=("img1",)),
        dataclasses.replace(make_image(1, [0.0, 1.0]), near=("img0",)),
        make_image(2, [1.0, 1.0]),
    ]
    captions = [
        CaptionRecord("a0", "img0", "a0", "en"),
        CaptionRecord("a1", "img0", "a1", "en", also=("img1",)),
        CaptionRecord("b0", "img1", "b0", "en"),
        CaptionRecord("c0", "img2", "c0", "en"),
        CaptionRecord("a0-de", "img0", "a0 de", "de"),
        CaptionRecord("b0-de", "img1", "b0 de", "de"),
    ]
    return RetrievalSplit("test", images, captions)


def test_twin_pairs_are_telling_captions_of_linked_images_in_one_language():
    pairs = twin_pairs(twin_split(), {"img0": "cell"})
    # a1 is true of both twins; a0 never meets b0 de; img2 has no twin
    assert pairs == [TwinPair((0, 1), (0, 2), "cell"), TwinPair((0, 1), (4, 5), "cell")]
    assert twin_pairs(twin_split())[0].kind is None


def test_winoground_scores_by_hand():
    """scores[p, caption, image]; caption 0 is true of image 0, caption 1 of image 1; ties are wrong."""
    scores = torch.tensor(
        [
            [[2.0, 0.0], [1.0, 3.0]],  # both captions prefer their image, both images their caption
            [[2.0, 1.0], [0.0, 1.0]],  # image 1 ties its two captions: image right, text wrong
            [[1.0, 0.9], [1.1, 2.0]],  # image 0 prefers caption 1: image right, text wrong
            [[1.0, 2.0], [0.0, 3.0]],  # caption 0 prefers image 1: text right, image wrong
        ]
    )
    right = winoground(scores)
    assert right["text"].tolist() == [True, False, False, True]
    assert right["image"].tolist() == [True, True, True, False]
    assert right["group"].tolist() == [True, False, False, False]


def fake_pipeline(scoring="cross+bi"):
    """bi: a0 = [1, 0.2] prefers img0, b0 = [1, 0.5] prefers img0 too (cosines .981 .196 / .894 .447);
    cross: a0 -> (2, 1), b0 -> (0, 1) over (img0, img1)."""
    texts = ["a0", "a1", "b0", "c0", "a0 de", "b0 de"]
    bi = FakeBi({t: v for t, v in zip(texts, [[1, 0.2], [1, 1], [1, 0.5], [1, 1], [1, 0.2], [1, 0.5]])})
    table = [[2, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [2, 1, 0], [0, 1, 0]]
    cross = FakeCross(texts, table)
    return RetrieveRerank(bi, cross, scoring=scoring, bi_weight=1.0, progress=False), cross


def test_twin_scores_of_each_method_by_hand():
    """bi: a0 and b0 both prefer img0, so text right (each image prefers its own caption), image wrong.
    cross: img1 ties a0 and b0 (text wrong), each caption prefers its image (image right). The reranking
    score adds the two: a0 -> (2.98, 1.20), b0 -> (0.89, 1.45), all right. cross_all and rerank@k rank by
    the reranking score, `cross` is the logit alone."""
    split = twin_split()
    pipeline, cross = fake_pipeline()
    metrics = pipeline.evaluate(
        split, ["bi", "rerank@2", "cross_all"], [1], stage="test", twins=twin_pairs(split, {"img0": "cell"})
    )
    twins = {key: value for key, value in metrics.items() if "twin" in key}
    expected = {"test/twin_pairs": 2.0, "test/twin_pairs_cell": 2.0}
    for method, (text, image, group) in {
        "bi": (100, 0, 0),
        "cross": (0, 100, 0),
        "rerank@2": (100, 100, 100),
        "cross_all": (100, 100, 100),
    }.items():
        expected |= {f"test/{method}/twin_text": text, f"test/{method}/twin_image": image}
        expected |= {f"test/{method}/twin_group": group, f"test/{method}/twin_group_cell": group}
    assert twins == pytest.approx(expected)  # no colour or size keys: no such pairs

    # with scoring=cross the reranking score is the logit: rerank@k scores as `cross` does
    pipeline, cross = fake_pipeline("cross")
    metrics = twin_metrics(pipeline, split, twin_pairs(split), ["bi", "rerank@2"], "val")
    assert metrics["val/rerank@2/twin_image"] == metrics["val/cross/twin_image"] == 100
    assert metrics["val/rerank@2/twin_text"] == 0 and "val/twin_pairs_cell" not in metrics
    # only the 4 pairs of each twin pair reach the cross-encoder: (a0|b0, a0 de|b0 de) x (img0, img1)
    assert sorted(cross.pairs) == sorted((t, i) for t in (0, 2, 4, 5) for i in (0, 1))


def test_bi_only_and_datasets_without_twins_get_no_cross_keys_or_none_at_all():
    split = twin_split()
    pipeline, _ = fake_pipeline()
    bi_only = twin_metrics(pipeline, split, twin_pairs(split), ["bi"], "test")
    assert {k.split("/")[1] for k in bi_only if k.count("/") == 2} == {"bi"}
    assert not any("twin" in key for key in pipeline.evaluate(split, ["bi", "rerank@2"], [1]))  # twins not given
    assert split_twins(split, DataConfig(dataset="coco")) == []
    assert twin_metrics(pipeline, split, [], ["bi"], "test") == {}


def test_pair_scores_are_the_pipelines_scores():
    """The reranking score of a pair is score_all's; the cosine is the embeddings' product."""
    split = twin_split()
    pipeline, _ = fake_pipeline()
    texts, images = split.texts, split.images
    rows = [(t, i) for t in range(len(texts)) for i in range(len(images))]
    scores = pair_scores(pipeline, texts, images, [t for t, _ in rows], [i for _, i in rows])
    torch.testing.assert_close(scores["rerank"].view(len(texts), -1), pipeline.score_all(texts, images))
    cosine = pipeline.embed_texts(texts) @ pipeline.embed_images(images).T
    torch.testing.assert_close(scores["bi"].view(len(texts), -1), cosine)
    torch.testing.assert_close(scores["rerank"] - scores["cross"], scores["bi"])
    with pytest.raises(ValueError, match="unknown scorers"):
        pair_scores(pipeline, texts, images, [0], [0], ["fused"])


def test_what_a_twin_swapped():
    red_circle, blue_square = Obj(shape=0, colour=0, size=0, cell=0), Obj(shape=1, colour=1, size=1, cell=4)
    scene = (red_circle, blue_square)
    assert swapped(scene, (red_circle._replace(colour=1), blue_square._replace(colour=0))) == "colour"
    assert swapped(scene, (red_circle._replace(cell=4), blue_square._replace(cell=0))) == "cell"
    assert swapped(scene, (red_circle._replace(size=1), blue_square._replace(size=0))) == "size"


def test_twins_of_a_generated_split_follow_the_generator():
    """Each pair links an image to its twin, says what the twin swapped, and its captions are true of
    their own scene and false of the other one (`holds`)."""
    syn = SyntheticConfig(n_train=4, n_val=4, n_test=40, languages=["en", "de"])
    split = generate_synthetic(syn)["test"]
    scenes, plans = plan_split(syn, "test", syn.n_test, parse_combos(syn))
    kinds = synthetic_swap_kinds(syn, "test")
    assert set(kinds) == {image.image_id for image in split.images if image.near} and kinds
    pairs = split_twins(split, DataConfig(synthetic=syn))
    assert pairs and {pair.images for pair in pairs} == {
        tuple(sorted((i, int(image.near[0][-6:])))) for i, image in enumerate(split.images) if image.near
    }
    items = [item for plan in plans for item in plan]
    per_image, per_lang = len(syn.languages) * syn.captions_per_image, syn.captions_per_image

    def item(row):  # captions: per image, per language, per planned item
        return items[row // per_image * per_lang + row % per_lang]

    for pair in pairs:
        (a, b), (ca, cb) = pair.images, pair.captions
        assert pair.kind == swapped(scenes[a][0], scenes[b][0])
        caption_a, caption_b = split.captions[ca], split.captions[cb]
        assert caption_a.lang == caption_b.lang
        item_a, item_b = item(ca), item(cb)
        assert holds(item_a, scenes[a][0]) and not holds(item_a, scenes[b][0])
        assert holds(item_b, scenes[b][0]) and not holds(item_b, scenes[a][0])
    with pytest.raises(ValueError, match="no synthetic split"):
        synthetic_swap_kinds(syn, "dev")


def test_a_run_logs_twin_scores(tiny_run):
    """The tiny run (synthetic, late-interaction reranking) logs twin scores for its test methods and the
    logit alone, in metrics.json and in results.md's second table."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test/twin_pairs"] > 0
    for method in ("bi", "cross", "rerank@5"):
        for score in ("twin_text", "twin_image", "twin_group"):
            assert 0 <= metrics[f"test/{method}/{score}"] <= 100
        assert metrics[f"test/{method}/twin_group"] <= metrics[f"test/{method}/twin_text"]
    kinds = [kind for kind in ("colour", "cell", "size") if f"test/twin_pairs_{kind}" in metrics]
    assert sum(metrics[f"test/twin_pairs_{kind}"] for kind in kinds) == metrics["test/twin_pairs"]
    assert all(f"test/rerank@5/twin_group_{kind}" in metrics for kind in kinds)
    assert "val/rerank@5/twin_group" in metrics and "val/bi/twin_group" not in metrics  # val methods: rerank@5
    results = (tiny_run / "results.md").read_text()
    assert results.startswith("| method |") and "| twins | text | image | group |" in results


def test_a_caption_pair_shared_by_twin_pairs_is_scored_once():
    split = twin_split()
    pipeline, cross = fake_pipeline()
    pair = TwinPair((0, 1), (0, 2), "colour")
    twice = twin_metrics(pipeline, split, [pair, pair], ["rerank@2"], "test")
    assert len(cross.pairs) == 4
    once = twin_metrics(pipeline, split, [pair], ["rerank@2"], "test")
    assert {k: v for k, v in twice.items() if "pairs" not in k} == {k: v for k, v in once.items() if "pairs" not in k}
    assert twice["test/twin_pairs_colour"] == 2


def test_twin_table_of_the_results():
    """One row per method with twin scores, the logit alone after bi; a swap kind without pairs is "-"."""
    metrics = {"test/bi/rsum": 500.0, "test/twin_pairs": 30.0, "test/twin_pairs_colour": 25.0}
    metrics |= {"test/twin_pairs_size": 5.0}
    for method, value in (("bi", 10.0), ("cross", 60.0), ("rerank@20", 40.0), ("cross_all", 40.0)):
        for key in ("twin_text", "twin_image", "twin_group", "twin_group_colour", "twin_group_size"):
            metrics[f"test/{method}/{key}"] = value
    header, rows = twin_rows(metrics)
    assert header == ["twins", "text", "image", "group", "colour (25)", "cell (0)", "size (5)"]
    assert [row[0] for row in rows] == ["bi", "cross", "rerank@20", "cross_all"]
    assert rows[1] == ["cross", "60.0", "60.0", "60.0", "60.0", "-", "60.0"]
    text = format_twin_table(metrics)
    assert text.startswith("30 twin pairs") and len(text.splitlines()) == 6
    assert format_twin_markdown(metrics).startswith("| twins | text | image | group | colour (25) |")
    assert format_twin_table({"test/bi/rsum": 500.0}) == format_twin_markdown({"test/bi/rsum": 500.0}) == ""
