import numpy as np
import pytest
import torch

from retrerank.retrieval.metrics import method_metrics, ranking_precision, recall_at_k, rsum


def test_many_to_many_recall_by_hand():
    rankings = np.array(
        [
            [1, 2, 7, 3, 5, 6, 8, 0, 9, 10],  # 2nd relevant caption (7) at rank 3
            [0, 1, 2, 3, 4, 5, 6, 8, 9, 10],  # relevant at rank 1
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 10],  # relevant (9) not retrieved
        ]
    )
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
        "val",
        "rerank@20",
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


def test_multi_positive_recall_is_a_hit_when_any_relevant_item_is_in_the_top_k():
    rankings = np.array(
        [
            [5, 3, 0, 1],  # relevant {0, 1, 2}: first one (0) at rank 3
            [2, 4, 1, 0],  # relevant {2, 9}: 2 at rank 1 (9 never retrieved)
            [4, 3, 2, 1],  # relevant {0, 5}: neither retrieved
        ]
    )
    relevant = [[0, 1, 2], [9, 2], np.array([0, 5])]
    assert recall_at_k(rankings, relevant, ks=(1, 2, 3)) == pytest.approx({"r1": 100 / 3, "r2": 100 / 3, "r3": 200 / 3})


def test_r_precision_and_map_at_r_by_hand():
    rankings = np.array(
        [
            [0, 9, 1, 8],  # R=2, [rel, non, rel]: R-Prec 1/2; mAP@R (1/2)(1/1 + 0) = 1/2
            [9, 1, 2, 3],  # R=3, [non, rel, rel, rel]: R-Prec 2/3; mAP@R (1/3)(0 + 1/2 + 2/3) = 7/18
            [4, 0, 1, 2],  # R=1, rel at rank 1: R-Prec 1; mAP@R 1
            [0, 4, 1, 2],  # R=1, rel at rank 2: R-Prec 0; mAP@R 0 (only the first R ranks count)
            [6, 5, 7, 0],  # R=2, [rel, rel]: R-Prec 1; mAP@R (1/2)(1 + 1) = 1
        ]
    )
    relevant = [[0, 1], np.array([1, 2, 3]), 4, [4], [5, 6]]
    expected_rprec = (1 / 2 + 2 / 3 + 1 + 0 + 1) / 5
    expected_map = (1 / 2 + 7 / 18 + 1 + 0 + 1) / 5
    assert ranking_precision(rankings, relevant) == pytest.approx(
        {"rprec": 100 * expected_rprec, "map_at_r": 100 * expected_map}
    )
    # A single relevant item per query: R-Precision = mAP@R = R@1.
    single = torch.tensor([[2, 0, 1], [1, 2, 0]])
    assert ranking_precision(single, np.array([0, 1])) == {"rprec": 50.0, "map_at_r": 50.0}
    # A repeated relevant index counts once (R = 2, not 3).
    assert ranking_precision(np.array([[3, 7]]), [[3, 7, 7]]) == {"rprec": 100.0, "map_at_r": 100.0}


def test_map_at_r_rewards_relevant_items_ranked_earlier():
    # Both R=2 queries have one relevant item among their first 2 (R-Prec 50) but mAP@R tells them apart.
    early = ranking_precision(np.array([[0, 9, 1]]), [[0, 1]])  # (1/2)(1/1 + 0) = 1/2
    late = ranking_precision(np.array([[9, 0, 1]]), [[0, 1]])  # (1/2)(0 + 1/2) = 1/4
    assert early == {"rprec": 50.0, "map_at_r": 50.0}
    assert late == {"rprec": 50.0, "map_at_r": 25.0}


def test_ranking_precision_bad_input_raises():
    with pytest.raises(ValueError, match="need rankings at least 3 deep"):
        ranking_precision(np.zeros((2, 2), dtype=int), [[0], [1, 2, 3]])
    with pytest.raises(ValueError, match="relevant items for 1"):
        ranking_precision(np.zeros((2, 3), dtype=int), [[0]])
    with pytest.raises(ValueError, match="no relevant items"):
        ranking_precision(np.zeros((2, 3), dtype=int), [[0], []])
    with pytest.raises(ValueError, match="no queries"):
        ranking_precision(np.zeros((0, 3), dtype=int), [])
    with pytest.raises(ValueError, match="negative"):
        ranking_precision(np.array([[-1, 0]]), [[0]])


def test_method_metrics_names_the_ranking_metrics_and_leaves_them_out_of_rsum():
    metrics = method_metrics(
        "test",
        "bi",
        {"i2t": {"r1": 10.0, "rprec": 7.0, "map_at_r": 5.0}, "t2i": {"r1": 30.0, "rprec": 20.0, "map_at_r": 15.0}},
    )
    assert metrics == {
        "test/bi/i2t_r1": 10.0,
        "test/bi/i2t_rprec": 7.0,
        "test/bi/i2t_map_at_r": 5.0,
        "test/bi/t2i_r1": 30.0,
        "test/bi/t2i_rprec": 20.0,
        "test/bi/t2i_map_at_r": 15.0,
        "test/bi/rsum": 40.0,
    }
    assert rsum(metrics) == 40.0


def test_evaluate_with_exact_relevance_by_hand():
    """Caption c0 is written for img0 and also true of img1, so img1 has two relevant captions."""
    from retrerank.data.records import CaptionRecord, RetrievalSplit
    from retrerank.retrieval.pipeline import RetrieveRerank
    from tests.retrieval.test_pipeline import FakeBi, FakeCross, make_image

    #        img0 img1 img2   scores (cross); the bi-encoder embeds caption j as row j, image i as one-hot i,
    table = [
        [0.1, 0.5, 0.9],  # c0  which gives the same order in both directions
        [0.3, 0.8, 0.0],  # c1
        [0.2, 0.6, 0.7],
    ]  # c2
    images = [make_image(i, np.eye(3)[i]) for i in range(3)]
    captions = [
        CaptionRecord("c0", "img0", "c0", also=("img1",)),
        CaptionRecord("c1", "img1", "c1"),
        CaptionRecord("c2", "img2", "c2"),
    ]
    split = RetrievalSplit("toy", images, captions)
    bi = FakeBi({f"c{j}": row for j, row in enumerate(table)})
    pipeline = RetrieveRerank(bi, FakeCross(split.texts, table), progress=False)
    # ks=(1,) but the queries with R=2 need rankings 2 deep: evaluate must search deep enough.
    metrics = pipeline.evaluate(split, ["bi", "rerank@3", "cross_all"], ks=(1,))

    # t2i: c0 -> [img2, img1, img0], relevant {img0, img1}: R@1 0, R-Prec 1/2, mAP@R (1/2)(0 + 1/2) = 1/4
    #      c1 -> [img1, ...] and c2 -> [img2, ...], one relevant each, at rank 1: 1, 1, 1
    # i2t: img0 -> [c1, c2, c0], relevant {c0}: 0, 0, 0
    #      img1 -> [c1, c2, c0], relevant {c0, c1}: R@1 1, R-Prec 1/2, mAP@R (1/2)(1/1 + 0) = 1/2
    #      img2 -> [c0, c2, c1], relevant {c2}: 0, 0, 0
    # (bi i2t by cosine with the normalised rows: img1 -> c1 .94, c2 .64, c0 .48; img2 -> c0 .87, c2 .74, c1 0)
    expected = {
        "t2i_r1": 100 * 2 / 3,
        "t2i_rprec": 100 * (1 / 2 + 1 + 1) / 3,
        "t2i_map_at_r": 100 * (1 / 4 + 1 + 1) / 3,
        "i2t_r1": 100 / 3,
        "i2t_rprec": 100 * (1 / 2) / 3,
        "i2t_map_at_r": 100 * (1 / 2) / 3,
    }
    for method in ("bi", "rerank@3", "cross_all"):
        got = {name: metrics[f"test/{method}/{name}"] for name in expected}
        assert got == pytest.approx(expected), method
        assert metrics[f"test/{method}/rsum"] == pytest.approx(100.0)  # R@1 only: 200/3 + 100/3
