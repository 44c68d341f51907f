"""RetrieveRerank with tiny fake encoders whose scores are known by construction.

Fake images have two regions: region 0 is the bi-encoder embedding, region 1 holds
the image's integer id (feature 0), which the fake cross-encoder looks up in a table.
"""

import numpy as np
import pytest
import torch
from torch import nn

from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.retrieval.methods import Method
from retrerank.retrieval.metrics import metric_names
from retrerank.retrieval.pipeline import RetrieveRerank


def make_image(image_id: int, vector) -> ImageRecord:
    vector = np.asarray(vector, dtype=np.float32)
    features = np.zeros((2, len(vector)), dtype=np.float32)
    features[0], features[1, 0] = vector, image_id
    return ImageRecord(f"img{image_id}", features, np.zeros((2, 4), dtype=np.float32))


class Vocab(nn.Module):
    def __init__(self, texts):
        super().__init__()
        self.ids = {text: i for i, text in enumerate(texts)}
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device

    def tokenize(self, texts):
        return {"ids": torch.tensor([self.ids[t] for t in texts])}


class FakeBi(Vocab):
    def __init__(self, text_vectors: dict):
        super().__init__(list(text_vectors))
        self.table = torch.tensor(np.array(list(text_vectors.values())), dtype=torch.float32)
        self.head = nn.Linear(1, 1)  # a submodule whose training flag must be restored

    def embed_texts(self, batch):
        return nn.functional.normalize(self.table[batch["ids"]], dim=-1)

    def embed_images(self, batch):
        return nn.functional.normalize(batch["features"][:, 0], dim=-1)


class FakeCross(Vocab):
    """score(text j, image i) = table[j, i]; records every pair it is asked about."""

    def __init__(self, texts, table):
        super().__init__(texts)
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.batches: list[int] = []
        self.pairs: list[tuple[int, int]] = []

    def score(self, text_batch, image_batch):
        assert not torch.is_grad_enabled() and not self.training
        text_ids, image_ids = text_batch["ids"], image_batch["features"][:, 1, 0].long()
        self.batches.append(len(text_ids))
        self.pairs += list(zip(text_ids.tolist(), image_ids.tolist()))
        return self.table[text_ids, image_ids]


def fan(n):
    """n image vectors whose cosine with [1, 0] strictly decreases with the index."""
    angles = np.linspace(0.1, 1.5, n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_rerank_reorders_the_head_and_keeps_the_tail_in_bi_order():
    images = [make_image(i, v) for i, v in enumerate(fan(6))]
    bi = FakeBi({"q": [1.0, 0.0]})
    cross = FakeCross(["q"], [[0.1, 0.2, 0.9, 0.5, 0.0, 5.0]])  # image 5 is never reranked
    pipeline = RetrieveRerank(bi, cross, progress=False)
    pipeline.index_images(images)

    bi_only = pipeline.text_to_image(["q"], k=6)
    assert bi_only.indices.tolist() == [[0, 1, 2, 3, 4, 5]]
    assert cross.pairs == []

    result = pipeline.text_to_image(["q"], k=6, rerank_top=4)
    assert result.indices.tolist() == [[2, 3, 1, 0, 4, 5]]
    assert result.reranked == 4
    torch.testing.assert_close(result.scores[0, :4], torch.tensor([0.9, 0.5, 0.2, 0.1]))
    torch.testing.assert_close(result.scores[0, 4:], bi_only.scores[0, 4:])  # tail keeps its cosines
    assert [ids[:3] for ids in result.lookup([im.image_id for im in images])] == [["img2", "img3", "img1"]]

    # k < rerank_top: the reranked head is cut to k
    assert pipeline.text_to_image(["q"], k=2, rerank_top=4).indices.tolist() == [[2, 3]]


def test_search_result_carries_its_rerank_time_and_the_old_names_are_deprecated_aliases():
    images = [make_image(i, v) for i, v in enumerate(fan(4))]
    bi = FakeBi({"q": [1.0, 0.0]})
    pipeline = RetrieveRerank(bi, FakeCross(["q"], [[0.1, 0.2, 0.9, 0.5]]), progress=False)
    pipeline.index_images(images)
    assert pipeline.text_to_image(["q"], k=2).rerank_seconds == 0.0  # no reranking
    result = pipeline.text_to_image(["q"], k=2, rerank_top=4)
    assert result.rerank_seconds > 0.0
    assert not hasattr(pipeline, "last_rerank_seconds")
    assert not hasattr(pipeline, "search_texts")  # one name per direction: text_to_image, image_to_text


def test_from_config_builds_the_pipeline_of_a_system():
    from types import SimpleNamespace

    from retrerank.config import EvalConfig

    system = SimpleNamespace(bi_encoder=FakeBi({"q": [1.0, 0.0]}), cross_encoder=FakeCross(["q"], [[0.0]]))
    cfg = EvalConfig(batch_size=3, rerank_batch_size=5, chunk_size=7, scoring="cross", bi_weight=2.5)
    pipeline = RetrieveRerank.from_config(system, cfg, progress=False)
    assert (pipeline.bi_encoder, pipeline.cross_encoder) == (system.bi_encoder, system.cross_encoder)
    assert (pipeline.batch_size, pipeline.rerank_batch_size, pipeline.chunk_size) == (3, 5, 7)
    assert (pipeline.scoring, pipeline.bi_weight, pipeline.progress) == ("cross", 2.5, False)
    assert RetrieveRerank.from_config(system, cfg, rerank=False).cross_encoder is None


def test_cross_plus_bi_adds_the_weighted_cosine():
    images = [make_image(i, v) for i, v in enumerate(fan(3))]
    bi = FakeBi({"q": [1.0, 0.0]})
    cross = FakeCross(["q"], [[0.0, 0.05, 0.1]])
    cosine = torch.tensor(fan(3)[:, 0], dtype=torch.float32)
    pipeline = RetrieveRerank(bi, cross, scoring="cross+bi", bi_weight=2.0, progress=False)
    pipeline.index_images(images)
    result = pipeline.text_to_image(["q"], k=3, rerank_top=3)
    expected = cross.table[0] + 2.0 * cosine
    assert result.indices.tolist() == [expected.argsort(descending=True).tolist()]
    torch.testing.assert_close(result.scores[0], expected.sort(descending=True).values)
    # cross_all ranks every pair by the same score
    torch.testing.assert_close(pipeline.score_all(["q"], images)[0], expected)


def test_cross_encoder_sees_only_rerank_top_pairs_per_query_in_batches():
    images = [make_image(i, v) for i, v in enumerate(fan(8))]
    bi = FakeBi({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    cross = FakeCross(["a", "b"], torch.zeros(2, 8))
    pipeline = RetrieveRerank(bi, cross, rerank_batch_size=4, progress=False)
    pipeline.index_images(images)
    pipeline.text_to_image(["a", "b"], k=5, rerank_top=3)
    assert cross.batches == [4, 2]
    assert sorted(cross.pairs) == [(0, 0), (0, 1), (0, 2), (1, 5), (1, 6), (1, 7)]


def test_each_reranked_batch_prepares_its_distinct_texts_and_images_once(monkeypatch):
    images = [make_image(i, v) for i, v in enumerate(fan(8))]
    bi = FakeBi({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    cross = FakeCross(["a", "b"], torch.arange(16.0).view(2, 8))
    tokenized, collated = [], []
    tokenize = cross.tokenize
    monkeypatch.setattr(cross, "tokenize", lambda texts: tokenized.append(list(texts)) or tokenize(texts))
    pipeline = RetrieveRerank(bi, cross, rerank_batch_size=4, progress=False)
    pipeline.index_images(images)
    monkeypatch.setattr(
        pipeline,
        "_collate",
        lambda ims: collated.append([im.image_id for im in ims]) or RetrieveRerank._collate(pipeline, ims),
    )
    result = pipeline.text_to_image(["a", "b"], k=3, rerank_top=3)
    assert tokenized == [["a", "b"], ["b"]]  # pairs by image: (a,0) (a,1) (a,2) (b,5) | (b,6) (b,7)
    assert collated == [["img0", "img1", "img2", "img5"], ["img6", "img7"]]
    assert sorted(cross.pairs) == [(0, 0), (0, 1), (0, 2), (1, 5), (1, 6), (1, 7)]  # each pair scored, as itself
    assert result.scores.tolist() == [[2.0, 1.0, 0.0], [15.0, 14.0, 13.0]]


def test_text_queries_rerank_grouped_by_image_with_the_logits_of_each_pair(monkeypatch):
    """Text queries whose top-k overlap share candidate images: scored image-major, each image is
    collated once per batch, and every query still gets its own pairs' logits in its own order."""
    images = [make_image(i, v) for i, v in enumerate(fan(4))]
    texts = ["a", "b", "c", "d"]
    bi = FakeBi({t: [1.0, 0.0] for t in texts})  # every query retrieves images 0, 1, 2
    table = torch.arange(16.0).view(4, 4).flip(1)  # text j, image i -> distinct logits, image 0 best
    cross = FakeCross(texts, table)
    pipeline = RetrieveRerank(bi, cross, rerank_batch_size=6, progress=False)
    pipeline.index_images(images)
    collated = []
    monkeypatch.setattr(
        pipeline,
        "_collate",
        lambda ims: collated.append([im.image_id for im in ims]) or RetrieveRerank._collate(pipeline, ims),
    )
    result = pipeline.text_to_image(texts, k=3, rerank_top=3)
    assert collated == [["img0", "img1"], ["img1", "img2"]]  # query-major would collate 3 per batch
    assert result.indices.tolist() == [[0, 1, 2]] * 4
    torch.testing.assert_close(result.scores, table[:, :3])
    # the same logits as scoring every pair on its own (a batch of one pair)
    alone = RetrieveRerank(bi, FakeCross(texts, table), rerank_batch_size=1, progress=False)
    alone.index_images(images)
    torch.testing.assert_close(alone.text_to_image(texts, k=3, rerank_top=3).scores, result.scores)


def test_cross_all_scores_image_major_and_returns_text_rows(monkeypatch):
    images = [make_image(i, v) for i, v in enumerate(fan(3))]
    texts = ["a", "b"]
    table = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    cross = FakeCross(texts, table)
    pipeline = RetrieveRerank(FakeBi({t: [1.0, 0.0] for t in texts}), cross, rerank_batch_size=2, progress=False)
    torch.testing.assert_close(pipeline.score_all(texts, images), table)
    assert cross.pairs == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]  # one image per batch


def test_image_to_text_reranks_indexed_texts():
    texts = ["t0", "t1", "t2"]
    bi = FakeBi({"t0": [1.0, 0.0], "t1": [0.8, 0.6], "t2": [0.0, 1.0]})
    cross = FakeCross(texts, [[0.0], [1.0], [0.5]])
    pipeline = RetrieveRerank(bi, cross, progress=False)
    pipeline.index_texts(texts)
    query = make_image(0, [1.0, 0.0])
    assert pipeline.image_to_text([query], k=3).indices.tolist() == [[0, 1, 2]]
    assert pipeline.image_to_text([query], k=3, rerank_top=2).indices.tolist() == [[1, 0, 2]]


def test_search_errors():
    images = [make_image(i, v) for i, v in enumerate(fan(3))]
    pipeline = RetrieveRerank(FakeBi({"q": [1.0, 0.0]}), progress=False)
    with pytest.raises(ValueError, match="index_images"):
        pipeline.text_to_image(["q"], k=1)
    pipeline.index_images(images)
    with pytest.raises(ValueError, match="k=4"):
        pipeline.text_to_image(["q"], k=4)
    with pytest.raises(ValueError, match="cross_encoder"):
        pipeline.text_to_image(["q"], k=2, rerank_top=2)
    with pytest.raises(ValueError, match="scoring"):
        RetrieveRerank(FakeBi({}), scoring="bi")


# ---------------------------------------------------------------- evaluate


def noisy_split(n_images=8, captions_per_image=2, noise=0.9, seed=0):
    """Captions embed near their image, with enough noise that the bi-encoder misranks some."""
    rng = np.random.default_rng(seed)
    image_vectors = rng.normal(size=(n_images, 6))
    images = [make_image(i, v) for i, v in enumerate(image_vectors)]
    captions, text_vectors = [], {}
    for i in range(n_images):
        for c in range(captions_per_image):
            text = f"caption {i}.{c}"
            captions.append(CaptionRecord(f"c{i}.{c}", f"img{i}", text))
            text_vectors[text] = image_vectors[i] + noise * rng.normal(size=6)
    return RetrievalSplit("test", images, captions), FakeBi(text_vectors)


def perfect_cross(split):
    table = np.zeros((len(split.captions), len(split.images)))
    table[np.arange(len(split.captions)), split.caption_image_index] = 1.0
    return FakeCross(split.texts, table)


def test_evaluate_metric_names_follow_the_convention():
    split, bi = noisy_split()
    pipeline = RetrieveRerank(bi, perfect_cross(split), progress=False)
    metrics = pipeline.evaluate(split, ["bi", "rerank@3", "cross_all"], ks=(1, 5), stage="val")
    expected = {"val/index_images_ms", "val/index_texts_ms"}
    for method in ("bi", "rerank@3", "cross_all"):
        expected |= {f"val/{method}/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5)}
        expected |= {f"val/{method}/{d}_{m}" for d in ("i2t", "t2i") for m in ("rprec", "map_at_r")}
        expected |= {f"val/{method}/rsum", f"val/{method}/i2t_ms_per_query", f"val/{method}/t2i_ms_per_query"}
    assert set(metrics) == expected
    for method in ("bi", "rerank@3", "cross_all"):  # what config.load lets eval.monitor name
        assert {key.split("/")[2] for key in metrics if key.startswith(f"val/{method}/")} == set(metric_names((1, 5)))
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["val/bi/rsum"] == pytest.approx(
        sum(metrics[f"val/bi/{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5))
    )


def test_evaluate_takes_methods_as_a_type_and_names_metrics_by_their_text():
    split, bi = noisy_split()
    pipeline = RetrieveRerank(bi, perfect_cross(split), progress=False)
    typed = pipeline.evaluate(split, [Method("bi"), Method.rerank(3)], ks=(1,))
    text = pipeline.evaluate(split, ["bi", "rerank@3"], ks=(1,))
    assert set(typed) == set(text) and typed["test/rerank@3/t2i_r1"] == text["test/rerank@3/t2i_r1"]


def test_perfect_cross_encoder_finds_every_positive_in_the_bi_top_k():
    split, bi = noisy_split()
    pipeline = RetrieveRerank(bi, perfect_cross(split), progress=False)
    metrics = pipeline.evaluate(split, ["bi", "rerank@3"], ks=(1, 3))

    # Whether the positive is in the bi top-3, from the bi scores directly.
    text_emb, image_emb = pipeline.embed_texts(split.texts), pipeline.embed_images(split.images)
    sims = (text_emb @ image_emb.T).numpy()
    top3_t2i = np.argsort(-sims, axis=1)[:, :3]
    in_top3 = [split.caption_image_index[j] in top3_t2i[j] for j in range(len(split.captions))]
    top3_i2t = np.argsort(-sims.T, axis=1)[:, :3]
    any_in_top3 = [bool(set(top3_i2t[i]) & set(caps)) for i, caps in enumerate(split.image_captions())]

    assert 0 < metrics["test/bi/t2i_r1"] < 100  # the noise makes the bi-encoder imperfect
    assert metrics["test/rerank@3/t2i_r1"] == pytest.approx(100 * np.mean(in_top3))
    assert metrics["test/rerank@3/t2i_r1"] == metrics["test/bi/t2i_r3"] > metrics["test/bi/t2i_r1"]
    assert metrics["test/rerank@3/i2t_r1"] == pytest.approx(100 * np.mean(any_in_top3))


def test_cross_all_recall_matches_the_score_matrix():
    split, bi = noisy_split()
    table = np.random.default_rng(1).normal(size=(len(split.captions), len(split.images)))
    pipeline = RetrieveRerank(bi, FakeCross(split.texts, table), rerank_batch_size=7, progress=False)
    metrics = pipeline.evaluate(split, ["cross_all"], ks=(1, 5))

    # rank of the positive = number of strictly better candidates (no ties in random scores)
    positive = table[np.arange(len(split.captions)), split.caption_image_index]
    t2i_rank = (table > positive[:, None]).sum(axis=1)
    i2t_rank = np.array(
        [min((table[:, i] > table[c, i]).sum() for c in caps) for i, caps in enumerate(split.image_captions())]
    )
    for k in (1, 5):
        assert metrics[f"test/cross_all/t2i_r{k}"] == pytest.approx(100 * np.mean(t2i_rank < k))
        assert metrics[f"test/cross_all/i2t_r{k}"] == pytest.approx(100 * np.mean(i2t_rank < k))
    assert "test/index_images_ms" not in metrics  # cross_all needs no index
    torch.testing.assert_close(pipeline.score_all(split.texts, split.images), torch.tensor(table, dtype=torch.float32))


def test_evaluate_restores_training_modes():
    split, bi = noisy_split()
    cross = perfect_cross(split)
    bi.train()
    bi.head.eval()  # a mixed state must come back as it was
    pipeline = RetrieveRerank(bi, cross, progress=False)
    pipeline.evaluate(split, ["rerank@2"], ks=(1,))
    assert bi.training and not bi.head.training
    assert cross.training


def test_evaluate_errors():
    split, bi = noisy_split()
    pipeline = RetrieveRerank(bi, perfect_cross(split), progress=False)
    for method in ("rerank", "rerank@0", "rerank@x", "rerank@2O", "cross"):
        with pytest.raises(ValueError, match="unknown retrieval method"):
            pipeline.evaluate(split, [method])
    with pytest.raises(ValueError, match="k=9 exceeds"):
        pipeline.evaluate(split, ["bi"], ks=(1, 9))
    with pytest.raises(ValueError, match="cross_encoder"):
        RetrieveRerank(bi, progress=False).evaluate(split, ["bi", "rerank@2"], ks=(1,))


def test_rerank_deeper_than_the_corpus_reranks_all_of_it():
    split, bi = noisy_split(n_images=4, captions_per_image=2)
    pipeline = RetrieveRerank(bi, perfect_cross(split), progress=False)
    metrics = pipeline.evaluate(split, ["rerank@20"], ks=(1,))
    assert metrics["test/rerank@20/t2i_r1"] == 100.0
    assert metrics["test/rerank@20/i2t_r1"] == 100.0


def test_cross_plus_bi_weighs_the_cosine_by_the_trained_logit_scale_unless_set():
    from types import SimpleNamespace

    from retrerank.config import EvalConfig
    from retrerank.objectives.contrastive import InfoNCE
    from retrerank.retrieval.pipeline import bi_weight

    system = SimpleNamespace(contrastive=InfoNCE(temperature=0.05))
    assert bi_weight(system, EvalConfig(scoring="cross+bi")) == pytest.approx(20.0)  # the bi-encoder's own logit
    assert bi_weight(system, EvalConfig(scoring="cross+bi", bi_weight=2.5)) == 2.5


def test_text_embeddings_come_back_in_the_order_given_though_batched_longest_first():
    texts = ["a", "a much longer caption", "mid length", "bb", "the longest caption of them all", "ccc"]
    vectors = {text: [float(i + 1), 1.0] for i, text in enumerate(texts)}
    bi = FakeBi(vectors)
    seen = []
    embed = bi.embed_texts
    bi.embed_texts = lambda batch: seen.append(batch["ids"].tolist()) or embed(batch)
    pipeline = RetrieveRerank(bi, None, batch_size=2, progress=False)
    out = pipeline.embed_texts(texts)
    expected = nn.functional.normalize(torch.tensor([vectors[t] for t in texts]), dim=-1)
    assert torch.equal(out, expected)
    assert seen == [[4, 1], [2, 5], [3, 0]]  # by length: 31, 21, 10, 3, 2, 1 characters
