"""experiments.analysis.fusion_weight: reranking's bi-encoder weight swept on val and test of a finished run."""
import json

import pytest

from experiments.analysis.fusion_weight import main
from retrerank.errors import UserInputError


def test_the_trained_weight_gives_the_runs_own_test_metrics(tiny_run, tmp_path):
    out = main([str(tiny_run), "--weights", "0", "1", "--out", str(tmp_path / "fw.json")])
    assert json.loads((tmp_path / "fw.json").read_text()) == out
    assert out["rerank"] == "rerank@5" and out["trained_scale"] > 0
    assert set(out["val"]) == set(out["test"]) == {"bi", "w=0", "w=1"}
    # w = 1 x the trained scale is eval.bi_weight=null, the run's own reranking score: the same numbers
    own = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("t2i_r1", "i2t_r1", "rsum"):
        assert out["test"]["w=1"][key] == pytest.approx(own[f"test/rerank@5/{key}"], abs=0.01)
        assert out["test"]["bi"][key] == pytest.approx(own[f"test/bi/{key}"], abs=0.01)


def test_not_a_run_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="no best checkpoint"):
        main([str(tmp_path / "nope")])
