"""Evaluation sharded over 2 CPU processes (gloo): the same metrics as one process, and each
rank reranks only part of the pairs. Covers the plain cross-encoder and the late-interaction
one (whose cached states are gathered too)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retrerank.retrieval.pipeline import RetrieveRerank
from tests.distributed import end_worker
from tests.retrieval.test_pipeline import noisy_split, perfect_cross

METHODS, KS = ["bi", "rerank@5", "cross_all"], [1, 5]


def fake_evaluation():
    split, bi = noisy_split(n_images=10, captions_per_image=2)
    cross = perfect_cross(split)
    metrics = RetrieveRerank(bi, cross, batch_size=3, rerank_batch_size=4, progress=False).evaluate(split, METHODS, KS)
    return metrics, len(cross.pairs)


def late_evaluation(tiny_bert_dir):
    from tests.retrieval.test_late_interaction import encoders, images, split

    bi, cross = encoders(tiny_bert_dir)
    return RetrieveRerank(bi, cross, batch_size=2, rerank_batch_size=3, progress=False).evaluate(
        split(images(6)), ["bi", "rerank@3", "cross_all"], [1, 3]
    )


def worker(rank, path, out, tiny_bert_dir):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    metrics, pairs = fake_evaluation()
    late = late_evaluation(tiny_bert_dir)
    counts = [None, None]
    dist.all_gather_object(counts, pairs)
    if rank == 0:
        torch.save({"metrics": metrics, "pairs": counts, "late": late}, out)
    end_worker()


def test_two_ranks_share_the_work_and_agree_with_one_process(tmp_path, tiny_bert_dir):
    out = tmp_path / "out.pt"
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(out), tiny_bert_dir), nprocs=2, join=True)
    result = torch.load(out)
    single, single_pairs = fake_evaluation()
    for key, value in single.items():
        if not key.endswith(("_ms", "_ms_per_query")):
            assert result["metrics"][key] == value, key
    assert sum(result["pairs"]) == single_pairs and max(result["pairs"]) < single_pairs  # split, not repeated
    late = late_evaluation(tiny_bert_dir)
    for key, value in late.items():
        if key.endswith("rsum"):
            assert abs(result["late"][key] - value) < 1e-6, key
