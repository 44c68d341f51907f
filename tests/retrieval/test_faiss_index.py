"""FAISS behind the index interface: same results as the exact index, save/load, and the pipeline."""

import pytest
import torch

faiss = pytest.importorskip("faiss")

from retrerank.retrieval.faiss_index import FaissIndex, make_index  # noqa: E402
from retrerank.retrieval.index import ExactIndex  # noqa: E402


def corpus(n=500, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)


def test_flat_equals_exact_and_ivf_with_all_lists_too():
    data, queries = corpus(), corpus(20, seed=1)
    exact_scores, exact_rows = ExactIndex(data).search(queries, 10)
    flat_scores, flat_rows = FaissIndex("flat", embeddings=data).search(queries, 10)
    assert torch.equal(flat_rows, exact_rows) and torch.allclose(flat_scores, exact_scores, atol=1e-5)
    ivf = FaissIndex("ivf", nlist=8, nprobe=8, embeddings=data)  # probing every list is exact
    assert torch.equal(ivf.search(queries, 10)[1], exact_rows)
    few = FaissIndex("ivf", nlist=8, nprobe=1, embeddings=data).search(queries, 10)[1]
    recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(few, exact_rows)) / exact_rows.numel()
    assert 0.2 < recall <= 1.0  # approximate, but finds neighbours


def test_save_load_and_errors(tmp_path):
    data = corpus()
    index = FaissIndex("ivf", nlist=4, nprobe=2, embeddings=data)
    index.save(tmp_path / "i.faiss")
    again = FaissIndex.load(tmp_path / "i.faiss")
    assert again.kind == "ivf" and len(again) == 500 and again.nprobe == 2
    assert torch.equal(again.search(data[:3], 5)[1], index.search(data[:3], 5)[1])
    with pytest.raises(ValueError, match="needs at least that many"):
        FaissIndex("ivf", nlist=1024, embeddings=data)
    (tmp_path / "junk").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="junk"):
        FaissIndex.load(tmp_path / "junk")
    with pytest.raises(ValueError, match="exact"):
        make_index("annoy", data)


def test_pipeline_with_faiss_gives_the_exact_pipelines_results():
    from retrerank.retrieval.pipeline import RetrieveRerank
    from tests.retrieval.test_pipeline import noisy_split, perfect_cross

    split, bi = noisy_split(n_images=12)
    cross = perfect_cross(split)
    methods = ["bi", "rerank@5"]
    exact = RetrieveRerank(bi, cross, progress=False).evaluate(split, methods, ks=[1, 5])
    flat = RetrieveRerank(bi, cross, progress=False, index="faiss_flat").evaluate(split, methods, ks=[1, 5])
    for key in exact:
        if key.endswith(("_r1", "_r5", "rsum")):
            assert flat[key] == pytest.approx(exact[key]), key
