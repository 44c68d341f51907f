"""experiments.analysis.fusion_weight: reranking's bi-encoder weight swept on val and test of a finished run."""

import json

import pytest

from experiments.analysis.fusion_weight import main
from retrerank.errors import UserInputError


def test_the_trained_weight_gives_the_runs_own_test_metrics(tiny_run, tmp_path):
    out = main(
        [
            str(tiny_run),
            "--data-root",
            str(tiny_run.parent / "data"),
            "--weights",
            "0",
            "1",
            "--out",
            str(tmp_path / "fw.json"),
        ]
    )
    written = json.loads((tmp_path / "fw.json").read_text())
    assert {key: written[key] for key in out} == out  # the result, and what made it: an evidence file
    assert {"command", "commit", "date", "machine"} <= set(written) and "fusion_weight" in written["command"]
    assert out["rerank"] == "rerank@5" and out["trained_scale"] > 0
    assert set(out["val"]) == set(out["test"]) == {"bi", "w=0", "w=1"}
    # w = 0 is the cross logit alone, the run's own reranking score (eval.scoring=cross): the same numbers
    own = json.loads((tiny_run / "metrics.json").read_text())
    keys = ["t2i_r1", "i2t_r1", "rsum"] + (["twin_group"] if "test/bi/twin_group" in own else [])
    assert sorted(out["test"]["w=1"]) == sorted(keys)  # the twin score where the split has twins
    assert out["metrics"]["test/w=1/rsum"] == out["test"]["w=1"]["rsum"] and len(out["metrics"]) == 6 * len(keys)
    for key in keys:
        assert out["test"]["w=0"][key] == pytest.approx(own[f"test/rerank@5/{key}"], abs=0.01)
        assert out["test"]["bi"][key] == pytest.approx(own[f"test/bi/{key}"], abs=0.01)


def test_a_larger_test_split_is_read_at_every_weight(tiny_run):
    out = main(
        [str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--weights", "0", "1", "--test-size", "12"]
    )
    big = out["larger_test"]
    assert set(big) == {"bi", "w=0", "w=1"}
    assert all(0 <= big[row]["i2t_r1"] <= 100 for row in big)
    # R@1 on 12 images moves in steps of 100/12: the split has the size asked for
    assert all(abs(big[row]["i2t_r1"] * 12 / 100 - round(big[row]["i2t_r1"] * 12 / 100)) < 0.01 for row in big)
    # the same split and checkpoint as the twins tool's: the bi-encoder's numbers agree
    from experiments.analysis.twins import main as twins

    other = twins([str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--test-size", "12"])["larger_test"]
    assert big["bi"]["rsum"] == pytest.approx(other["larger_test/bi/rsum"], abs=0.01)
    assert big["w=0"]["rsum"] == pytest.approx(other["larger_test/rerank@5/rsum"], abs=0.01)


def test_not_a_run_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="no best checkpoint"):
        main([str(tmp_path / "nope")])
