"""Compositional benchmark scores: worked out by hand from known pair scores, through the pipeline's own pair
scoring with fake models, and end to end: `python -m experiments.evaluate RUN data.compositional=...` on a
tiny CLIP run (its numbers recomputed from the pipeline's full score matrix), and refused in one line for a
region-feature run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retrerank.cli import run_main
from retrerank.config import ConfigError, load
from retrerank.data.compositional import PAIR_OF_PAIRS, TRUE_FALSE, Benchmark, Item, load_benchmark
from retrerank.retrieval.compositional import (
    benchmark_metrics,
    compositional_metrics,
    format_compositional_table,
    item_scores,
    scorers_for,
)
from retrerank.retrieval.pipeline import RetrieveRerank
from tests.data.test_compositional_readers import write_aro, write_sugarcrepe, write_winoground
from tests.retrieval.test_pipeline import FakeBi, FakeCross, make_image

CONFIGS = Path(__file__).parents[2] / "experiments" / "configs"


def bench(kind: str, categories_per_item: list[tuple[str, ...]], categories: list[str], macro=()) -> Benchmark:
    """A benchmark whose items are only their categories (benchmark_metrics reads no texts or images)."""
    shape = ((0, 1), (0, 1)) if kind == PAIR_OF_PAIRS else ((0,), (0, 1))
    items = [Item(str(n), *shape, cats) for n, cats in enumerate(categories_per_item)]
    return Benchmark("tiny", kind, [], [], items, categories, list(macro))


def test_winoground_scores_by_hand_overall_and_per_category():
    """scores[n, caption, image]; caption 0 is true of image 0, caption 1 of image 1; ties are wrong."""
    scores = torch.tensor(
        [
            [[2.0, 0.0], [1.0, 3.0]],  # all right
            [[2.0, 1.0], [0.0, 1.0]],  # image 1 ties its captions: image right, text wrong
            [[1.0, 0.9], [1.1, 2.0]],  # image 0 prefers caption 1: image right, text wrong
            [[1.0, 2.0], [0.0, 3.0]],  # caption 0 prefers image 1: text right, image wrong
        ]
    )
    cats = [("object", "main_preds_1"), ("object", "main_preds_1"), ("relation", "main_preds_2"), ("both",)]
    b = bench(PAIR_OF_PAIRS, cats, ["object", "relation", "both", "main_preds_1", "main_preds_2", "none"])
    metrics = benchmark_metrics(b, {"bi": scores, "cross": scores.flip(2)})
    p = "compositional/tiny"
    assert metrics == pytest.approx(
        {
            f"{p}/items": 4,
            f"{p}/items/object": 2,
            f"{p}/items/relation": 1,
            f"{p}/items/both": 1,
            f"{p}/items/main_preds_1": 2,
            f"{p}/items/main_preds_2": 1,  # a category without items ("none") gets no keys
            f"{p}/bi/text": 50,
            f"{p}/bi/image": 75,
            f"{p}/bi/group": 25,
            f"{p}/bi/object/text": 50,
            f"{p}/bi/object/image": 100,
            f"{p}/bi/object/group": 50,
            f"{p}/bi/relation/text": 0,
            f"{p}/bi/relation/image": 100,
            f"{p}/bi/relation/group": 0,
            f"{p}/bi/both/text": 100,
            f"{p}/bi/both/image": 0,
            f"{p}/bi/both/group": 0,
            f"{p}/bi/main_preds_1/text": 50,
            f"{p}/bi/main_preds_1/image": 100,
            f"{p}/bi/main_preds_1/group": 50,
            f"{p}/bi/main_preds_2/text": 0,
            f"{p}/bi/main_preds_2/image": 100,
            f"{p}/bi/main_preds_2/group": 0,
        }
        | {  # images swapped: every image prefers the wrong caption, every caption the wrong image (or a tie)
            f"{p}/cross/{c}{s}": 0
            for c in ("", "object/", "relation/", "both/", "main_preds_1/", "main_preds_2/")
            for s in ("text", "image", "group")
        }
    )


def test_true_false_accuracy_micro_and_macro_by_hand():
    """Right when the true caption (0) scores above the false one (1); ties are wrong. Category c is not
    reported (not in `categories`): it counts in the micro accuracy only."""
    scores = torch.tensor([[3.0, 1.0], [2.0, 1.0], [1.0, 1.0], [0.0, 1.0], [5.0, 4.0], [1.0, 0.0]]).view(6, 2, 1)
    cats = [("a",), ("a",), ("a",), ("b",), ("b",), ("c",)]
    metrics = benchmark_metrics(bench(TRUE_FALSE, cats, ["a", "b"], ["a", "b"]), {"rerank": scores})
    p = "compositional/tiny"
    assert metrics == pytest.approx(
        {
            f"{p}/items": 6,
            f"{p}/items/a": 3,
            f"{p}/items/b": 2,
            f"{p}/rerank/acc_micro": 100 * 4 / 6,
            f"{p}/rerank/acc_macro": (100 * 2 / 3 + 50) / 2,
            f"{p}/rerank/a/acc": 100 * 2 / 3,
            f"{p}/rerank/b/acc": 50,
        }
    )
    table = format_compositional_table(metrics)
    assert table.startswith("tiny: 6 items, accuracy (%): the true caption scores above the false one")
    rows = [line.split() for line in table.splitlines()[1:]]
    assert rows[0] == ["category", "items", "rerank"]
    assert rows[1] == ["micro", "(all", "items)", "6", "66.7"] and rows[2] == ["macro", "(2", "categories)", "58.3"]
    assert rows[3] == ["a", "3", "66.7"] and rows[4] == ["b", "2", "50.0"]
    assert format_compositional_table({"test/bi/rsum": 1.0}) == ""


def fake_pipeline(scoring="cross+bi"):
    """bi: a0 = [1, 0.2] and b0 = [1, 0.5] both prefer img0 = [1, 0] to img1 = [0, 1] (cosines .981 .196 /
    .894 .447); cross: a0 -> (2, 1), b0 -> (0, 1) over (img0, img1)."""
    bi = FakeBi({"a0": [1, 0.2], "b0": [1, 0.5]})
    cross = FakeCross(["a0", "b0"], [[2, 1], [0, 1]])
    return RetrieveRerank(bi, cross, scoring=scoring, bi_weight=1.0, progress=False), cross


def fake_benchmark(kind: str) -> Benchmark:
    images = [make_image(0, [1.0, 0.0]), make_image(1, [0.0, 1.0])]
    if kind == PAIR_OF_PAIRS:  # a0 is true of img0, b0 of img1
        items = [Item("0", (0, 1), (0, 1), ("object",)), Item("1", (0, 1), (0, 1), ("relation",))]
    else:  # a0 is the true caption of both images, b0 the false one
        items = [Item("0", (0,), (0, 1), ("x",)), Item("1", (1,), (0, 1), ("y",))]
    return Benchmark(
        "fake", kind, ["a0", "b0"], images, items, ["object", "relation"] if items[0].images[1:] else ["x", "y"]
    )


def test_scores_through_the_pipelines_pair_scoring():
    """bi: text right (each image prefers its own caption), image wrong (b0 prefers img0). cross: img1 ties
    a0 and b0 (text wrong), each caption prefers its own image (image right). The reranking score adds the two
    (a0 -> 2.98, 1.20; b0 -> 0.89, 1.45): all right. The same item twice: each distinct pair is scored once."""
    pipeline, cross = fake_pipeline()
    b = fake_benchmark(PAIR_OF_PAIRS)
    scores = item_scores(pipeline, b)
    assert sorted(cross.pairs) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # two items, four distinct pairs
    full = pipeline.score_all(b.texts, b.images)  # [text, image]: the reranking score of every pair
    torch.testing.assert_close(scores["rerank"][0], full)
    torch.testing.assert_close(scores["cross"][1], torch.tensor([[2.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(scores["bi"][0], pipeline.embed_texts(b.texts) @ pipeline.embed_images(b.images).T)
    metrics = compositional_metrics(pipeline, b)
    for scorer, (text, image, group) in {"bi": (100, 0, 0), "cross": (0, 100, 0), "rerank": (100, 100, 100)}.items():
        for score, value in zip(("text", "image", "group"), (text, image, group)):
            assert metrics[f"compositional/fake/{scorer}/{score}"] == value
            assert metrics[f"compositional/fake/{scorer}/relation/{score}"] == value

    # true vs false: img0 prefers a0 under every scorer; img1: bi .196 < .447 (wrong), cross ties 1 = 1 (wrong)
    metrics = compositional_metrics(pipeline, fake_benchmark(TRUE_FALSE), ["bi", "cross"])
    assert metrics["compositional/fake/bi/acc_micro"] == metrics["compositional/fake/cross/acc_micro"] == 50
    assert metrics["compositional/fake/cross/x/acc"] == 100 and metrics["compositional/fake/cross/y/acc"] == 0
    assert not any("/rerank/" in key for key in metrics)

    # scoring=cross: the reranking score is the logit alone
    pipeline, _ = fake_pipeline("cross")
    scores = item_scores(pipeline, b, ["cross", "rerank"])
    torch.testing.assert_close(scores["rerank"], scores["cross"])


def test_scorers_follow_the_runs_test_methods():
    assert scorers_for(["bi"]) == ["bi"]
    assert scorers_for(["bi", "rerank@20", "cross_all"]) == ["bi", "cross", "rerank"]


def test_the_keys_are_test_side_only():
    with pytest.raises(ConfigError, match=r"^invalid config key 'data\.compositional': a test-side key"):
        load(None, ["data.compositional=winoground"])
    with pytest.raises(ConfigError, match=r"'data\.compositional_root': .* data\.compositional is, which is not set"):
        load(None, ["data.compositional_root=/somewhere"])
    with pytest.raises(ConfigError, match="'data.compositional': 'winogrand' is not one of"):
        load(None, ["data.compositional=winogrand"])


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def clip_run(tiny_clip_dir, tmp_path_factory) -> Path:
    """A tiny CLIP run: two training steps on 16 synthetic 32 x 32 scenes."""
    from experiments.run import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip-runs")
    return main(
        [
            str(CONFIGS / "clip.yaml"),
            f"output_dir={root}",
            "name=clip",
            f"data.root={root / 'data'}",
            f"model.backbone={tiny_clip_dir}",
            "data.synthetic.image_size=32",
            "data.synthetic.n_train=16",
            "data.synthetic.n_val=10",
            "data.synthetic.n_test=10",
            "data.batch_size=8",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "eval.rerank_ks=[3]",
            "eval.val_methods=[rerank@3]",
            "eval.monitor=val/rerank@3/rsum",
            "eval.cross_all=false",
        ]
    )


def winoground_by_hand(full: torch.Tensor, b: Benchmark) -> dict[str, float]:
    """Text / image / group score (%) from a [text, image] matrix, by plain comparisons."""
    right = {"text": 0, "image": 0, "group": 0}
    for item in b.items:
        (c0, c1), (i0, i1) = item.captions, item.images
        s = [[float(full[c, i]) for i in (i0, i1)] for c in (c0, c1)]
        text = s[0][0] > s[1][0] and s[1][1] > s[0][1]
        image = s[0][0] > s[0][1] and s[1][1] > s[1][0]
        right["text"] += text
        right["image"] += image
        right["group"] += text and image
    return {score: 100 * n / len(b.items) for score, n in right.items()}


def test_evaluate_scores_a_clip_run_on_winoground(clip_run, tmp_path, capsys):
    from experiments.evaluate import main
    from retrerank.build import load_system

    root = write_winoground(tmp_path / "winoground")
    metrics = main([str(clip_run), "data.compositional=winoground", f"data.compositional_root={root}"])
    out = capsys.readouterr().out
    assert out.startswith("winoground: 3 items, Winoground scores (%) by scorer: text, image, group")
    assert "bi text" in out and "rerank group" in out and "main_preds_2" in out
    saved = clip_run / "evaluations" / "data.compositional=winoground.json"  # where the data is: not in the name
    assert json.loads(saved.read_text())["metrics"] == metrics
    assert not any(key.startswith("test/") for key in metrics)

    # the same numbers from the pipeline's full score matrices (score_all, not the pair scoring)
    system, cfg = load_system(clip_run / "checkpoints" / "best.ckpt")
    b = load_benchmark("winoground", root)
    rerank = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    assert cfg.eval.scoring == "cross"  # the default: the reranking score is the logit alone
    full = {
        "cross": rerank.score_all(b.texts, b.images),
        "bi": (rerank.embed_texts(b.texts) @ rerank.embed_images(b.images).T).cpu(),
    }
    full["rerank"] = full["cross"]
    for scorer, matrix in full.items():
        for score, value in winoground_by_hand(matrix, b).items():
            assert metrics[f"compositional/winoground/{scorer}/{score}"] == pytest.approx(value), (scorer, score)
    assert metrics["compositional/winoground/items/object"] == 1
    assert metrics["compositional/winoground/items/main_preds_1"] == 2


def test_evaluate_scores_sugarcrepe_and_aro_and_names_a_missing_file(clip_run, tmp_path):
    from experiments.evaluate import main
    from retrerank.reevaluate import evaluate_run

    write_sugarcrepe(tmp_path / "sugarcrepe")  # the default folder: <data.root>/sugarcrepe
    sugar = evaluate_run(clip_run, ["data.compositional=sugarcrepe", f"data.root={tmp_path}"], progress=False)
    assert sugar["compositional/sugarcrepe/items"] == 14
    for scorer in ("bi", "cross", "rerank"):
        per_file = [sugar[f"compositional/sugarcrepe/{scorer}/{c}/acc"] for c in ("replace_obj", "swap_att", "add_att")]
        assert all(0 <= v <= 100 for v in per_file)
        assert 0 <= sugar[f"compositional/sugarcrepe/{scorer}/acc_macro"] <= 100
    write_aro(tmp_path / "aro")
    aro = evaluate_run(clip_run, ["data.compositional=aro_relation", f"data.root={tmp_path}"], progress=False)
    assert aro["compositional/aro_relation/items"] == 4 and "compositional/aro_relation/rerank/sitting_on/acc" in aro
    assert "compositional/aro_relation/rerank/next_to/acc" not in aro  # counted in the micro accuracy only

    nowhere = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_:
        run_main(main, [str(clip_run), "data.compositional=aro_attribution", f"data.compositional_root={nowhere}"])
    assert str(exit_.value.code) == f"data error: missing file: {nowhere / 'visual_genome_attribution.json'}"


def test_a_region_feature_run_is_refused_in_one_line_before_its_model_is_built(tiny_run, tmp_path, monkeypatch):
    from experiments.evaluate import main

    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr("retrerank.build.load_system", never)
    with pytest.raises(SystemExit) as exit_:  # the benchmark folder is not even looked at
        run_main(main, [str(tiny_run), "data.compositional=winoground", f"data.compositional_root={tmp_path / 'no'}"])
    line = str(exit_.value.code)
    assert "\n" not in line and line.startswith("config error: invalid config key 'data.compositional': winoground")
    assert "over region features, which would need a region store" in line and "(CLIP, SigLIP, BLIP)" in line
    assert not (tiny_run / "evaluations" / "data.compositional=winoground.json").exists()
