"""experiments.analysis.twins: which attribute a twin swapped, and the twin table of a finished run."""

import json

import numpy as np
import pytest
import torch

from experiments.analysis.twins import kind_table, loose_cells, main, place_table, twin_table
from retrerank.build import load_system
from retrerank.data.synthetic import Obj
from retrerank.data.synthetic.captions import Desc, Item
from retrerank.errors import UserInputError
from retrerank.retrieval.twins import swapped


def test_twin_table_agrees_with_the_full_score_matrices(tiny_run):
    """Scoring only each caption's two pairs gives the counts that every pair's scores give (the tiny
    run reranks by late interaction, from cached layer states)."""
    from retrerank.data.synthetic import load_synthetic
    from retrerank.data.synthetic.generate import parse_combos, plan_split, twin_rows
    from retrerank.retrieval.pipeline import RetrieveRerank

    system, cfg = load_system(tiny_run / "checkpoints" / "best.ckpt")
    syn = cfg.data.synthetic
    split = load_synthetic(syn, cfg.data.root)["test"].filter_languages(["en"])
    scenes, plans = plan_split(syn, "test", syn.n_test, parse_combos(syn))
    twins = twin_rows(scenes)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    table = twin_table(pipeline, split, scenes, plans, twins)
    cross_only = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    cross_only.scoring = "cross"
    full = {
        "bi": pipeline.embed_texts(split.texts) @ pipeline.embed_images(split.images).T,
        "cross": cross_only.score_all(split.texts, split.images),
        "rerank": pipeline.score_all(split.texts, split.images),
    }
    kinds = [item.kind for plan in plans for item in plan]
    expected: dict = {}
    for q, i in enumerate(split.caption_image_index.tolist()):
        if i in twins:
            row = expected.setdefault(f"{swapped(scenes[i][0], scenes[twins[i]][0])}/{kinds[q]}", {"captions": 0})
            row["captions"] += 1
            for name, scores in full.items():
                row[name] = row.get(name, 0) + int(scores[q, i] > scores[q, twins[i]])
    assert table == expected and table


def test_twin_table_of_a_run(tiny_run, tmp_path):
    out = main(
        [
            str(tiny_run),
            "--data-root",
            str(tiny_run.parent / "data"),
            "--test-size",
            "16",
            "--out",
            str(tmp_path / "twins.json"),
        ]
    )
    written = json.loads((tmp_path / "twins.json").read_text())
    assert {key: written[key] for key in out} == out  # the result, and what made it: an evidence file
    assert {"command", "commit", "date", "machine"} <= set(written) and "twins" in written["command"]
    rows = out["twins"].values()
    assert out["twins_total"]["captions"] == sum(r["captions"] for r in rows) > 0
    assert all(0 <= r[name] <= r["captions"] for r in rows for name in ("bi", "cross", "rerank"))
    assert all(key.split("/")[0] in ("colour", "cell", "size") for key in out["twins"])
    big = out["larger_test"]
    assert (big["images"], big["captions"]) == (16, 80)
    assert 0 <= big["larger_test/bi/t2i_r1"] <= 100 and "larger_test/rerank@5/rsum" in big
    assert out["checkpoint"] == "best"


def test_the_last_checkpoint_on_request(tiny_run, tmp_path):
    """--checkpoint last reads last.ckpt (the end of training), not the best validation's."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes((tiny_run / "checkpoints" / "best.ckpt").read_bytes())
    out = main([str(tmp_path / "run"), "--checkpoint", "last", "--data-root", str(tiny_run.parent / "data")])
    assert (
        out["checkpoint"] == "last"
        and out["twins_total"] == main([str(tiny_run), "--data-root", str(tiny_run.parent / "data")])["twins_total"]
    )
    with pytest.raises(UserInputError, match="no best checkpoint"):
        main([str(tmp_path / "run")])  # (this folder has only a last one)


def test_not_a_run_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="no best checkpoint"):
        main([str(tmp_path / "nope")])


def test_kind_table_by_hand():
    """Four t2i queries: two 'obj' (one right for both, one fixed by reranking), two 'rel' (one broken
    by reranking, one wrong for both); query 3 is true of images 1 and 2, so image 2 first is right."""
    relevant = [np.array([0]), np.array([1]), np.array([2]), np.array([1, 2])]
    top1 = {"bi": torch.tensor([0, 0, 2, 0]), "rerank@5": torch.tensor([0, 1, 0, 2])}
    table = kind_table(top1, relevant, ["obj", "obj", "rel", "rel"])
    assert table == {
        "obj": {"captions": 2, "bi": 1, "rerank@5": 2, "only bi": 0, "only rerank@5": 1},
        "rel": {"captions": 2, "bi": 1, "rerank@5": 1, "only bi": 1, "only rerank@5": 1},
    }
    with pytest.raises(ValueError, match="same queries"):
        kind_table(top1, relevant[:3], ["obj", "obj", "rel", "rel"])


def test_by_kind_of_a_run(tiny_run):
    """--by-kind adds the larger split's t2i R@1 by kind; its totals are the run's larger_test t2i R@1."""
    out = main([str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--test-size", "16", "--by-kind"])
    rows, big = out["larger_test_by_kind"], out["larger_test"]
    assert sum(r["captions"] for r in rows.values()) == big["captions"] == 80
    assert set(rows) <= {"obj", "and", "list", "rel"}
    for method in ("bi", "rerank@5"):
        right = sum(r[method] for r in rows.values())
        assert 100 * right / 80 == pytest.approx(big[f"larger_test/{method}/t2i_r1"], abs=0.01)
    with pytest.raises(UserInputError, match="--test-size"):
        main([str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--by-kind"])


def test_loose_english_reading_of_a_place():
    """Cells are row-major on the 3x3 grid: "on the left" (3) reads as the left column, "at the top" (1)
    as the top row; a corner or the centre is only itself."""
    assert loose_cells(3) == {0, 3, 6} and loose_cells(5) == {2, 5, 8}
    assert loose_cells(1) == {0, 1, 2} and loose_cells(7) == {6, 7, 8}
    assert loose_cells(0) == {0} and loose_cells(4) == {4}


def test_place_table_by_hand():
    """Four images; a red circle (colour 0, shape 0) sits in cell 0 of image 0, cell 3 of image 1, cell 5
    of image 2 and, large, in cell 3 of image 3. Queries: "a red circle on the left" (cell 3, true of 1
    and 3), "a small red circle on the left" (true of 1 only), "a red circle in the top left" (true of
    0), and one caption without a place, which the table leaves out. A place-blind reader finds a red
    circle in all four images (a small one in 0, 1, 2): it is right first for 2/4 + 1/3 edge queries and 1/4
    corner queries."""
    red = Obj(shape=0, colour=0, size=0, cell=0)
    scenes = [
        (red,),
        (red._replace(cell=3),),
        (red._replace(cell=5),),
        (red._replace(cell=3, size=1), Obj(shape=1, colour=1, size=0, cell=8)),
    ]
    items = [
        Item("obj", (Desc(0, 0, None, 3),)),
        Item("obj", (Desc(0, 0, 0, 3),)),
        Item("obj", (Desc(0, 0, None, 0),)),
        Item("obj", (Desc(0, 0, None, None),)),
    ]
    relevant = [np.array([1, 3]), np.array([1]), np.array([0]), np.array([0, 1, 2, 3])]
    top1 = {"bi": torch.tensor([0, 3, 2, 1]), "rerank@5": torch.tensor([3, 1, 0, 2])}
    table = place_table(top1, relevant, items, scenes)
    assert table["edge"] == {
        "captions": 2,
        "bi": 0,
        "bi wrong: loose": 1,
        "bi wrong: other cell": 0,
        "bi wrong: size": 1,
        "bi wrong: absent": 0,
        "rerank@5": 2,
        "rerank@5 wrong: loose": 0,
        "rerank@5 wrong: other cell": 0,
        "rerank@5 wrong: size": 0,
        "rerank@5 wrong: absent": 0,
        "place-blind chance": 0.83,
    }
    assert (
        table["corner"]["captions"],
        table["corner"]["bi"],
        table["corner"]["bi wrong: other cell"],
        table["corner"]["rerank@5"],
        table["corner"]["place-blind chance"],
    ) == (1, 0, 1, 1, 0.25)
    assert set(table) == {"edge", "corner"}
    with pytest.raises(ValueError, match="same queries"):
        place_table(top1, relevant[:3], items, scenes)


def test_by_place_of_a_run(tiny_run):
    """--by-place counts the same right first images as --by-kind does for the placed 'obj' captions."""
    out = main(
        [str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--test-size", "16", "--by-kind", "--by-place"]
    )
    rows, obj = out["larger_test_by_place"], out["larger_test_by_kind"].get("obj", {"captions": 0, "bi": 0})
    assert 0 < sum(r["captions"] for r in rows.values()) <= obj["captions"]
    for r in rows.values():
        for method in ("bi", "rerank@5"):
            wrong = sum(v for key, v in r.items() if key.startswith(f"{method} wrong"))
            assert r[method] + wrong == r["captions"]
        assert 0 < r["place-blind chance"] <= r["captions"]
    with pytest.raises(UserInputError, match="--by-place reads"):
        main([str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--by-place"])
