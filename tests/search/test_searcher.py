"""The Searcher API: embeddings, the scoring switch, timings, saved indexes, opening a run folder."""

import json

import pytest
import torch

from retrerank.build import build_system
from retrerank.config import ConfigError, from_dict
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.search import Searcher, open_run
from retrerank.search_index import SearchIndexError


@pytest.fixture(scope="module")
def opened(run):
    searcher, split = open_run(run, data_root=run.parent / "data")
    searcher.index_split(split)
    return searcher, split


def test_open_run_gives_the_runs_best_checkpoint_and_test_split(run, opened):
    searcher, split = opened
    assert searcher.checkpoint == str(run / "checkpoints" / "best.ckpt")
    assert split.name == "test" and len(split.images) == 12 and {c.lang for c in split.captions} == {"en"}
    assert searcher.image_ids == [im.image_id for im in split.images]
    with pytest.raises(ConfigError, match="no best checkpoint in .*nowhere: there is no such run folder"):
        open_run(run / "nowhere")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        open_run(run, "dev")


def test_encodings_are_normalised_and_equal_the_pipelines_own(opened):
    searcher, split = opened
    images, texts = searcher.encode_images(split.images), searcher.encode_texts(split.texts[:7])
    assert images.shape == (12, searcher.encode_texts(["a"]).shape[1]) and texts.shape[0] == 7
    assert torch.allclose(images.norm(dim=1), torch.ones(12), atol=1e-5)
    assert torch.allclose(texts.norm(dim=1), torch.ones(7), atol=1e-5)
    # the index's vectors (encoded with the layer-m states in one pass): the same embeddings
    pipeline = RetrieveRerank.from_config(searcher.system, searcher.config.eval, progress=False)
    assert torch.allclose(images, pipeline.index_images(split.images), atol=1e-5)
    assert torch.allclose(texts, pipeline.index_texts(split.texts)[:7], atol=1e-5)
    # and search ranks by their inner product
    bi = searcher.search_text(split.texts[:3], k=4, rerank_top=None)
    scores = texts[:3] @ images.T
    for q, row in enumerate(bi):
        assert [h.score for h in row] == pytest.approx(scores[q].topk(4).values.tolist(), abs=1e-5)


def test_scoring_switches_per_call_without_touching_the_shared_pipeline(opened):
    searcher, split = opened
    default = searcher.pipeline.scoring
    cross = searcher.rank_text(split.texts[0], k=5, rerank_top=5, scoring="cross")
    both = searcher.rank_text(split.texts[0], k=5, rerank_top=5, scoring="cross+bi")
    assert searcher.pipeline.scoring == default
    bi = {h.id: h.score for h in searcher.search_text(split.texts[0], k=5, rerank_top=None)[0]}
    weight = searcher.pipeline.bi_weight
    for hit in cross.hits[0]:  # cross+bi = cross logit + bi_weight x cosine, for the same 5 candidates
        assert dict((h.id, h.score) for h in both.hits[0])[hit.id] == pytest.approx(
            hit.score + weight * bi[hit.id], abs=1e-4
        )
    assert cross.reranked == 5 and cross.rerank_ms > 0 and cross.retrieve_ms > 0
    assert searcher.rank_text("x", k=3, rerank_top=None).rerank_ms == 0
    with pytest.raises(ValueError, match="scoring must be one of"):
        searcher.rank_text("x", scoring="bi")


def test_a_saved_index_searches_exactly_as_before_with_reranking(opened, tmp_path):
    searcher, split = opened
    before_t2i = searcher.search_text(split.texts, k=8, rerank_top=5)
    before_i2t = searcher.search_image(split.images[:3], k=6, rerank_top=4)
    folder = searcher.save_index(tmp_path / "index")
    meta = json.loads((folder / "index.json").read_text())
    assert meta["images"]["records"] is False and meta["images"]["join_layer"] == 1  # late: states, not records

    fresh = Searcher.from_checkpoint(searcher.checkpoint, index=folder)
    assert fresh.image_ids == searcher.image_ids and fresh.caption_ids == searcher.caption_ids
    assert fresh.search_text(split.texts, k=8, rerank_top=5) == before_t2i
    assert fresh.search_image(split.images[:3], k=6, rerank_top=4) == before_i2t
    searcher.save_index(folder)  # an index folder is replaced in place
    with pytest.raises(SearchIndexError, match="not a saved search index: refusing"):
        searcher.save_index(tmp_path)


def test_a_full_attention_index_keeps_the_records_its_reranking_reads(opened, tmp_path):
    _, split = opened
    cfg = from_dict(
        {
            **opened[0].system.hparams["config"],
            "model": {**opened[0].system.hparams["config"]["model"], "join_layer": 0},
        }
    )
    torch.manual_seed(0)
    searcher = Searcher(build_system(cfg).eval(), cfg.eval)
    searcher.index_split(split)
    before = searcher.search_text(split.texts[:6], k=8, rerank_top=6)
    before_i2t = searcher.search_image(split.images[:2], k=5, rerank_top=5)
    folder = searcher.save_index(tmp_path / "full")
    assert json.loads((folder / "index.json").read_text())["images"]["records"] is True

    again = Searcher(searcher.system, cfg.eval)
    again.load_index(folder)
    assert again.pipeline.images[3].pixels.tolist() == split.images[3].pixels.tolist()
    assert again.search_text(split.texts[:6], k=8, rerank_top=6) == before
    assert again.search_image(split.images[:2], k=5, rerank_top=5) == before_i2t


def test_an_index_of_another_model_is_refused_in_one_line(opened, tmp_path):
    searcher, _ = opened
    folder = searcher.save_index(tmp_path / "index")
    other = Searcher(build_system(searcher.config).eval(), searcher.config.eval)  # same config, other weights
    with pytest.raises(SearchIndexError, match="built by another model .*best.ckpt.*index the corpus again") as err:
        other.load_index(folder)
    assert "\n" not in str(err.value) and err.value.label == "search index error"
    with pytest.raises(SearchIndexError, match="is not a saved search index"):
        other.load_index(tmp_path)
