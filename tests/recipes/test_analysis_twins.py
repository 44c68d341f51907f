"""experiments.analysis.twins: which attribute a twin swapped, and the twin table of a finished run."""
import json

import pytest

import numpy as np
import torch

from experiments.analysis.twins import kind_table, main, swapped
from retrerank.data.synthetic import Obj
from retrerank.errors import UserInputError


def test_what_a_twin_swapped():
    red_circle, blue_square = Obj(shape=0, colour=0, size=0, cell=0), Obj(shape=1, colour=1, size=1, cell=4)
    scene = (red_circle, blue_square)
    assert swapped(scene, (red_circle._replace(colour=1), blue_square._replace(colour=0))) == "colour"
    assert swapped(scene, (red_circle._replace(cell=4), blue_square._replace(cell=0))) == "cell"
    assert swapped(scene, (red_circle._replace(size=1), blue_square._replace(size=0))) == "size"


def test_twin_table_of_a_run(tiny_run, tmp_path):
    out = main([str(tiny_run), "--test-size", "16", "--out", str(tmp_path / "twins.json")])
    assert json.loads((tmp_path / "twins.json").read_text()) == out
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
    out = main([str(tmp_path / "run"), "--checkpoint", "last"])
    assert out["checkpoint"] == "last" and out["twins_total"] == main([str(tiny_run)])["twins_total"]
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
    out = main([str(tiny_run), "--test-size", "16", "--by-kind"])
    rows, big = out["larger_test_by_kind"], out["larger_test"]
    assert sum(r["captions"] for r in rows.values()) == big["captions"] == 80
    assert set(rows) <= {"obj", "and", "list", "rel"}
    for method in ("bi", "rerank@5"):
        right = sum(r[method] for r in rows.values())
        assert 100 * right / 80 == pytest.approx(big[f"larger_test/{method}/t2i_r1"], abs=0.01)
    with pytest.raises(UserInputError, match="--test-size"):
        main([str(tiny_run), "--by-kind"])
