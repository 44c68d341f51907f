import numpy as np
import pytest
import torch

from retrerank.retrieval.metrics import method_metrics, recall_at_k, rsum


def test_many_to_many_recall_by_hand():
    rankings = np.array([
        [1, 2, 7, 3, 5, 6, 8, 0, 9, 10],  # 2nd relevant caption (7) at rank 3
        [0, 1, 2, 3, 4, 5, 6, 8, 9, 10],  # relevant at rank 1
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 10],  # relevant (9) not retrieved
    ])
    relevant = [np.array([4, 7]), [0], np.array([9])]
    recalls = recall_at_k(rankings, relevant, ks=(1, 3, 5, 10))
    assert recalls == pytest.approx({"r1": 100 / 3, "r3": 200 / 3, "r5": 200 / 3, "r10": 200 / 3})


def test_one_relevant_item_per_query_and_tensor_input():
    rankings = torch.tensor([[2, 0, 1], [1, 2, 0]])
    assert recall_at_k(rankings, np.array([0, 1]), ks=(1, 2)) == {"r1": 50.0, "r2": 100.0}


def test_only_the_first_max_k_columns_count():
    assert recall_at_k(np.array([[0, 1, 2]]), [[2]], ks=(1, 2)) == {"r1": 0.0, "r2": 0.0}


def test_bad_input_raises():
    with pytest.raises(ValueError, match="fewer than the largest k=5"):
        recall_at_k(np.zeros((2, 3), dtype=int), [[0], [1]], ks=(1, 5))
    with pytest.raises(ValueError, match="relevant items for 1"):
        recall_at_k(np.zeros((2, 3), dtype=int), [[0]], ks=(1,))
    with pytest.raises(ValueError, match="no relevant items"):
        recall_at_k(np.zeros((2, 3), dtype=int), [[0], []], ks=(1,))


def test_method_metrics_names_and_rsum():
    metrics = method_metrics(
        "val", "rerank@20",
        {"i2t": {"r1": 10.0, "r5": 20.0}, "t2i": {"r1": 30.0, "r5": 40.0}},
        {"i2t": 1.5, "t2i": 2.5},
    )
    assert metrics == {
        "val/rerank@20/i2t_r1": 10.0,
        "val/rerank@20/i2t_r5": 20.0,
        "val/rerank@20/t2i_r1": 30.0,
        "val/rerank@20/t2i_r5": 40.0,
        "val/rerank@20/rsum": 100.0,
        "val/rerank@20/i2t_ms_per_query": 1.5,
        "val/rerank@20/t2i_ms_per_query": 2.5,
    }
    assert rsum(metrics) == 100.0  # ignores timings and the rsum entry itself
    assert rsum({"r1": 1.0, "r10": 2.0, "loss": 5.0}) == 3.0
    with pytest.raises(ValueError, match="unknown directions"):
        method_metrics("val", "bi", {"x2y": {"r1": 1.0}})
