"""recall_at_k (top-k rankings only) against torchmetrics' RetrievalHitRate (the full score matrix):
hit@k, the image-to-text protocol, with several relevant items per query."""

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate

from retrerank.retrieval.metrics import recall_at_k


def hit_rate(scores: torch.Tensor, relevant: list[list[int]], k: int) -> float:
    """torchmetrics over every (query, item) score, in percent."""
    target = torch.zeros_like(scores, dtype=torch.bool)
    for q, items in enumerate(relevant):
        target[q, items] = True
    indexes = torch.arange(scores.shape[0]).unsqueeze(1).expand_as(scores)
    return 100.0 * float(RetrievalHitRate(top_k=k)(scores.flatten(), target.flatten(), indexes=indexes.flatten()))


def ours(scores: torch.Tensor, relevant: list[list[int]], ks: tuple[int, ...]) -> dict[str, float]:
    return recall_at_k(scores.topk(max(ks), dim=1).indices, relevant, ks)  # as the pipeline: top max(k) only


def test_hand_made_case_agrees_with_torchmetrics_and_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.1, 0.7, 0.2, 0.3],  # ranking 0 1 3 5 4 2; relevant 2, 3: first hit at rank 3
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 5 4 3 2 1 0; relevant 5, 0: hit at rank 1
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # ranking 0 1 2 3 4 5; relevant 4, 5: first hit at rank 5
        ]
    )
    relevant = [[2, 3], [5, 0], [4, 5]]
    ks = (1, 2, 3, 5)
    expected = {"r1": 100 / 3, "r2": 100 / 3, "r3": 200 / 3, "r5": 100.0}
    assert ours(scores, relevant, ks) == pytest.approx(expected)
    assert {f"r{k}": hit_rate(scores, relevant, k) for k in ks} == pytest.approx(expected)


def test_random_scores_with_several_relevant_items_agree_with_torchmetrics():
    generator = torch.Generator().manual_seed(0)
    queries, corpus, ks = 64, 40, (1, 5, 10)
    scores = torch.rand(queries, corpus, generator=generator)  # continuous: no ties to break differently
    rng = np.random.default_rng(0)
    relevant = [rng.choice(corpus, size=rng.integers(1, 6), replace=False).tolist() for _ in range(queries)]
    recalls = ours(scores, relevant, ks)
    assert 0 < recalls["r1"] < recalls["r10"] < 100  # a case where k matters
    assert recalls == pytest.approx({f"r{k}": hit_rate(scores, relevant, k) for k in ks})
