import json

import pytest
import torch

from experiments.bench import peers
from retrerank.errors import UsageError

TIMING = ("ours_seconds", "peer_seconds", "ratio", "ratio_median", "ratio_min", "ratio_max", "repeats")


def test_peers_match_the_embedded_minilm_and_exact_search_of_sentence_transformers_and_faiss(capsys):
    threads = torch.get_num_threads()
    try:
        rows = peers.main(
            ["--only", "text_embed", "exact_search", "--captions", "64", "--corpus", "2000", "--repeats", "1"]
            + ["--threads", "1"]
        )
    finally:
        torch.set_num_threads(threads)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed == rows
    assert [(r["measurement"], r["peer"]) for r in rows] == [
        ("text_embed", "sentence-transformers encode"),
        ("exact_search", "sentence-transformers semantic_search"),
        ("exact_search", "faiss IndexFlatIP"),
    ]
    for row in rows:
        assert row["benchmark"] == "peers" and {"command", "commit", "date", "machine"} <= set(row)
        if "skipped" in row:  # faiss missing: said, not hidden
            assert row["peer"] == "faiss IndexFlatIP" and "faiss" in row["skipped"]
            continue
        assert set(TIMING) <= set(row) and row["repeats"] == 1 and row["equal"] is True
        assert row["ratio"] == pytest.approx(row["peer_seconds"] / row["ours_seconds"], rel=1e-2, abs=2e-4)
        assert row["ratio_min"] == row["ratio_median"] == row["ratio_max"]  # one repeat, one paired ratio
    embed = rows[0]
    assert (embed["captions"], embed["batch_size"], embed["max_text_len"]) == (64, 128, 40)
    assert embed["min_cosine"] >= 0.9999
    for row in rows[1:]:
        if "skipped" not in row:
            assert (row["corpus"], row["dim"], row["queries"], row["k"]) == (2000, 384, 1000, 10)
            assert row["same_ids"] == 1.0 and row["max_abs_diff"] < 1e-5
            assert row["ours_peak_mb"] > 0 and row["peer_peak_mb"] > 0


def test_exact_search_agreement_allows_ties_and_only_ties():
    ids = torch.tensor([[0, 1, 2], [3, 4, 5]])
    scores = torch.tensor([[0.9, 0.5, 0.5], [0.8, 0.7, 0.6]])
    swapped_tie = torch.tensor([[0, 1, 7], [3, 4, 5]])  # 2 and 7 score the same
    assert peers.agreement((scores, ids), (scores, swapped_tie)) == {
        "equal": True,
        "same_ids": round(5 / 6, 6),
        "max_abs_diff": 0.0,
    }
    worse = scores.clone()
    worse[0, 2] = 0.4  # a different item with a lower score: not a tie
    assert peers.agreement((scores, ids), (worse, swapped_tie))["equal"] is False


def test_peers_refuses_a_top_k_deeper_than_the_corpus():
    with pytest.raises(UsageError, match="--k 10 exceeds --corpus 5"):
        peers.main(["--only", "exact_search", "--corpus", "5", "--k", "10"])


def test_rerank_loop_agrees_with_the_per_query_loop_and_machine_peak_counts_the_steps(tiny_run, capsys):
    threads = torch.get_num_threads()
    try:
        loop, peak = peers.main(
            ["--only", "rerank_loop", "machine_peak", "--checkpoint", str(tiny_run)]
            + ["--data-root", str(tiny_run.parent / "data"), "--rerank-k", "3", "--repeats", "1", "--device", "cpu"]
        )
    finally:
        torch.set_num_threads(threads)
    assert (loop["measurement"], loop["peer"]) == ("rerank_loop", "LAVIS compute_sim_matrix per-query loop")
    assert loop["equal"] is True and loop["same_candidates"] == 1.0 and loop["max_abs_diff"] <= 1e-5
    assert loop["pairs"] == 3 * (loop["images"] + loop["captions"]) and loop["state_dtype"] == "float32"
    assert set(TIMING) <= set(loop) and loop["checkpoint"] == str(tiny_run)
    assert peak["measurement"] == "machine_peak" and peak["rerank_pairs"] == 3 * loop["captions"]
    assert peak["peak_gflops"] == max(peak["peak_gflops_torch"], peak["peak_gflops_numpy"]) > 0
    for step in ("rerank", "train"):
        assert peak[f"{step}_gflop"] > 0
        rate = peak[f"{step}_gflop"] / peak[f"{step}_seconds" if step == "rerank" else "train_step_seconds"]
        assert peak[f"{step}_gflops"] == pytest.approx(rate, rel=0.02)
        assert peak[f"{step}_fraction"] == pytest.approx(peak[f"{step}_gflops"] / peak["peak_gflops"], rel=0.02)


def test_the_gemm_recorder_and_flop_count_see_each_matmul_of_a_step():
    from experiments.bench.machine_peak import counted

    layer, batched = torch.nn.Linear(8, 16), torch.randn(3, 5, 7)
    x = torch.randn(4, 8)

    def step():
        layer(x)  # addmm 4 x 8 @ 8 x 16
        batched @ torch.randn(3, 7, 2)  # bmm
        layer(x)

    flops, shapes = counted(step)
    assert shapes == {(1, 4, 8, 16, True): 2, (3, 5, 7, 2, False): 1}  # a linear layer's weight is transposed
    assert flops == 2 * (2 * 4 * 8 * 16) + 2 * 3 * 5 * 7 * 2
