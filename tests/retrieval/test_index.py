import pytest
import torch

import retrerank.retrieval.index as index_module
from retrerank.data.errors import DataError
from retrerank.retrieval.index import ExactIndex

try:
    import faiss  # noqa: F401

    BACKENDS = [False, True]  # use_faiss: torch's chunked top-k, FAISS's knn (CPU)
except ImportError:
    BACKENDS = [False]


def _random(n, dim=8, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 23, 1000])  # < k, not dividing N, = N, > N
@pytest.mark.parametrize("query_chunk_size", [1, 4, 100])
@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_chunked_search_equals_full_topk(chunk_size, query_chunk_size, use_faiss):
    corpus, queries = _random(23), _random(10, seed=1)
    expected_scores, expected_indices = (queries @ corpus.T).topk(5, dim=1)

    scores, indices = ExactIndex(corpus, use_faiss=use_faiss).search(queries, 5, chunk_size, query_chunk_size)

    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores)


def test_search_never_builds_more_than_one_chunk_of_scores(monkeypatch):
    shapes = []
    original = index_module._topk_lower_index_first

    def spy(scores, k):
        shapes.append(tuple(scores.shape))
        return original(scores, k)

    monkeypatch.setattr(index_module, "_topk_lower_index_first", spy)
    ExactIndex(_random(50), use_faiss=False).search(_random(9, seed=1), 3, chunk_size=16, query_chunk_size=4)
    assert shapes and all(q <= 4 and n <= 16 for q, n in shapes)
    assert len(shapes) == 3 * 4  # ceil(9 / 4) query chunks x ceil(50 / 16) corpus chunks


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 10])
@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_ties_are_broken_by_lower_index(chunk_size, use_faiss):
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    corpus = torch.stack([b, a, b, a, a, b])
    scores, indices = ExactIndex(corpus, use_faiss=use_faiss).search(a[None], 4, chunk_size=chunk_size)
    assert indices.tolist() == [[1, 3, 4, 0]]
    assert scores.tolist() == [[1.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 16, 300])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_many_ties_across_many_chunks_give_a_stable_sort_of_the_whole_corpus(chunk_size, k, use_faiss):
    # rows drawn from 4 distinct vectors: every score is tied many times, within and across chunks
    # (with chunk_size 1 and 2 the kept candidates are reduced many times before the end)
    pool = _random(4, dim=3, seed=2)
    picks = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(3))
    corpus, queries = pool[picks], _random(6, dim=3, seed=4)
    order = (queries @ corpus.T).sort(dim=1, descending=True, stable=True)

    scores, indices = ExactIndex(corpus, use_faiss=use_faiss).search(
        queries, k, chunk_size=chunk_size, query_chunk_size=4
    )

    assert torch.equal(indices, order.indices[:, :k])
    torch.testing.assert_close(scores, order.values[:, :k])


@pytest.mark.skipif(True not in BACKENDS, reason="faiss is not installed")
def test_faiss_and_torch_find_the_same_rows_on_a_larger_corpus():
    """The CPU search by FAISS gives the torch path's ids (no ties among random rows) and its scores."""
    corpus = torch.nn.functional.normalize(_random(5000, dim=64, seed=5), dim=1)
    queries = torch.nn.functional.normalize(_random(40, dim=64, seed=6), dim=1)
    torch_scores, torch_ids = ExactIndex(corpus, use_faiss=False).search(queries, 10, chunk_size=512)
    faiss_scores, faiss_ids = ExactIndex(corpus).search(queries, 10)
    assert torch.equal(faiss_ids, torch_ids) and faiss_ids.dtype == torch.long
    torch.testing.assert_close(faiss_scores, torch_scores, atol=1e-5, rtol=0)


def test_add_appends_to_the_corpus():
    index = ExactIndex()
    assert len(index) == 0
    index.add(_random(5))
    index.add(torch.eye(8)[:3] * 100)
    assert len(index) == 8 and index.dim == 8
    _, indices = index.search(torch.eye(8)[2:3], 1)
    assert indices.tolist() == [[7]]


def test_bad_arguments_raise_clear_errors():
    index = ExactIndex(_random(5))
    with pytest.raises(ValueError, match="k=6"):
        index.search(_random(2), 6)
    with pytest.raises(ValueError, match="k=0"):
        index.search(_random(2), 0)
    with pytest.raises(ValueError, match="queries must be"):
        index.search(_random(2, dim=4), 1)
    with pytest.raises(ValueError, match="width"):
        index.add(_random(2, dim=4))
    with pytest.raises(ValueError, match="empty"):
        ExactIndex().search(_random(2), 1)


def test_save_load_roundtrip(tmp_path):
    corpus = _random(12)
    path = tmp_path / "sub" / "index.pt"
    ExactIndex(corpus).save(path)
    loaded = ExactIndex.load(path)
    assert torch.equal(loaded.embeddings, corpus)
    assert [p.name for p in path.parent.iterdir()] == ["index.pt"]  # no temp file left behind
    queries = _random(3, seed=2)
    assert torch.equal(loaded.search(queries, 4)[1], ExactIndex(corpus).search(queries, 4)[1])
    with pytest.raises(FileNotFoundError):
        ExactIndex.load(tmp_path / "missing.pt")


def test_a_cut_foreign_or_non_finite_saved_index_is_refused_in_one_line(tmp_path):
    path = tmp_path / "index.pt"
    ExactIndex(_random(6)).save(path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"garbage" * 10)
    for name in ("cut", "garbage"):
        with pytest.raises(DataError) as err:
            ExactIndex.load(tmp_path / f"{name}.pt")
        assert str(err.value).startswith(f"{tmp_path / name}.pt is not a readable saved ExactIndex (cut or damaged?): ")
        assert "\n" not in str(err.value)
    torch.save({"embeddings": _random(3)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"other\.pt is not a saved ExactIndex$"):
        ExactIndex.load(tmp_path / "other.pt")
    for value, what in ((float("nan"), "holds NaN or inf"), (0.0, "is all zeros")):
        corpus = _random(6)
        corpus[2:4] = value
        ExactIndex(corpus).save(path)
        with pytest.raises(DataError) as err:
            ExactIndex.load(path)
        assert str(err.value) == f"{path}: embeddings row 2 {what} (and 1 more rows)"
