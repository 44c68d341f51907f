"""Late-interaction reranking (model.join_layer = m): cached layer-m states give the scores
computed from scratch, the lower states are the bi-encoder's, and the pipeline uses the cache."""

import numpy as np
import pytest
import torch

from retrerank.build import build_encoders
from retrerank.config import AdapterConfig, ModelConfig
from retrerank.data.collate import collate_images
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.retrieval.state_cache import StateCache

FEATURES = 8
TEXTS = [
    "a red circle",
    "a blue square left of a green star",
    "two small yellow triangles",
    "a purple diamond",
    "a large orange star above a red square",
    "the green circle",
]


def images(n: int = 5) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        r = 1 + i % 3  # different region counts: padding differs per item
        xy = rng.random((r, 2), dtype=np.float32) * 0.5
        out.append(
            ImageRecord(
                f"img{i}", rng.standard_normal((r, FEATURES)).astype(np.float32), np.concatenate([xy, xy + 0.3], 1)
            )
        )
    return out


def encoders(tiny_bert_dir, join_layer=1, adapters=None, cross_head="attend"):
    torch.manual_seed(0)
    bi, cross = build_encoders(
        ModelConfig(backbone=tiny_bert_dir, join_layer=join_layer, cross_head=cross_head), FEATURES, adapters
    )
    for p in cross.parameters():  # adapters start near the identity: make them matter
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2) if p.shape[0] < 16 else None
    return bi.eval(), cross.eval()


def split(imgs):
    captions = [CaptionRecord(f"c{j}", imgs[j % len(imgs)].image_id, text) for j, text in enumerate(TEXTS)]
    return RetrievalSplit("test", imgs, captions)


@torch.no_grad()
def test_lower_states_are_the_bi_encoders_and_block_diagonal(tiny_bert_dir):
    bi, cross = encoders(tiny_bert_dir)
    text, image = bi.tokenize(TEXTS[:3]), collate_images(images(3))
    for ours, theirs in (
        (cross.lower_text(text), bi.texts_lower(text, 1)),
        (cross.lower_image(image), bi.images_lower(image, 1)),
    ):
        assert torch.equal(ours[1], theirs[1]) and torch.allclose(ours[0], theirs[0], atol=1e-6)
    # the two separate runs of block 0 are one joint run under a block-diagonal attention mask
    backbone = cross.backbone
    (t, tm), (i, im) = backbone.embed_text(text), backbone.embed_image(image)
    hidden, mask = torch.cat([t, i], 1), torch.cat([tm, im], 1)
    segment = torch.cat([torch.zeros_like(tm, dtype=torch.long), torch.ones_like(im, dtype=torch.long)], 1)
    allowed = (segment[:, :, None] == segment[:, None, :]) & mask[:, None, :]
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
    joint = backbone.layers[0](hidden, attention_mask=additive)
    joint = joint[0] if isinstance(joint, tuple) else joint
    lower_t, lower_i = cross.lower_text(text)[0], cross.lower_image(image)[0]
    assert torch.allclose(joint[:, : t.shape[1]][tm], lower_t[tm], atol=1e-5)
    assert torch.allclose(joint[:, t.shape[1] :][im], lower_i[im], atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "adapters",
    [None, AdapterConfig(enabled=True, reduction_factor=4, shared=False)],
    ids=["full", "separate-adapter-sets"],
)
def test_cached_scores_equal_scores_from_scratch(tiny_bert_dir, adapters):
    bi, cross = encoders(tiny_bert_dir, adapters=adapters)
    assert bi.shares_lower_layers(cross) == (adapters is None)
    imgs = images()
    pipeline = RetrieveRerank(bi, cross, batch_size=2, rerank_batch_size=3, progress=False)
    pipeline.index_images(imgs)
    assert len(pipeline.image_states) == len(imgs)
    result = pipeline.text_to_image(TEXTS, k=len(imgs), rerank_top=len(imgs))
    for q, text in enumerate(TEXTS):
        rows = result.indices[q].tolist()
        scratch = cross.score(bi.tokenize([text] * len(rows)), collate_images([imgs[r] for r in rows]))
        assert torch.allclose(result.scores[q], scratch, atol=2e-3)  # the cache is float16 (scores spread ~0.15)
        # ranked by those scores, up to the float16 cache's precision (two near-ties may swap)
        assert (scratch[:-1] >= scratch[1:] - 4e-3).all()
    every = pipeline.score_all(TEXTS, imgs)
    scratch = torch.stack([cross.score(bi.tokenize([t] * len(imgs)), collate_images(imgs)) for t in TEXTS])
    assert torch.allclose(every, scratch, atol=2e-3)
    # image queries against cached caption states, the other direction
    pipeline.index_texts(TEXTS)
    back = pipeline.image_to_text(imgs[:2], k=3, rerank_top=len(TEXTS))
    scratch = cross.score(bi.tokenize([TEXTS[r] for r in back.indices[0].tolist()]), collate_images([imgs[0]] * 3))
    assert torch.allclose(back.scores[0], scratch, atol=2e-3)


@torch.no_grad()
def test_bi_embeddings_are_unchanged_by_the_split_at_m(tiny_bert_dir):
    bi, cross = encoders(tiny_bert_dir)
    text = bi.tokenize(TEXTS)
    assert torch.allclose(bi.embed_lower(bi.texts_lower(text, 1), 1), bi.embed_texts(text), atol=1e-6)
    pipeline = RetrieveRerank(bi, cross, progress=False)
    late = pipeline.evaluate(split(images()), ["bi", "rerank@3", "cross_all"], ks=[1, 3])
    plain = RetrieveRerank(bi, None, progress=False).evaluate(split(images()), ["bi"], ks=[1, 3])
    assert late["test/bi/rsum"] == plain["test/bi/rsum"]


def test_state_cache_rows_padding_size_and_file(tmp_path):
    states = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    cache = StateCache(join_layer=2)
    cache.add(states, mask)
    got, got_mask = cache.gather([1, 0, 1], torch.float32)
    assert got.shape == (3, 3, 4) and got_mask.tolist() == [[True] * 3, [True, True, False], [True] * 3]
    assert torch.equal(got[0], states[1]) and torch.equal(got[1, :2], states[0, :2]) and not got[1, 2].any()
    assert cache.nbytes() == 5 * 4 * 2 + 3 * 8  # 5 tokens x 4 dims in float16 + offsets
    cache.save(tmp_path / "c.safetensors")
    again = StateCache.load(tmp_path / "c.safetensors")
    assert again.join_layer == 2 and torch.equal(again.gather([0, 1], torch.float32)[0], got[1:])
    with pytest.raises(FileNotFoundError, match="nope"):
        StateCache.load(tmp_path / "nope")


def test_join_layer_is_runtime_state_and_checked(tiny_bert_dir):
    bi, cross = encoders(tiny_bert_dir, join_layer=2)
    pipeline = RetrieveRerank(bi, cross, progress=False)
    pipeline.index_images(images())
    with cross.joining_at(1), pytest.raises(ValueError, match="index them again"):
        pipeline.text_to_image(TEXTS[:1], k=2, rerank_top=2)
    with pytest.raises(ValueError, match="outside 0..2"):
        with cross.joining_at(3):
            pass
    with pytest.raises(ValueError, match="join_layer=3 is outside"):
        encoders(tiny_bert_dir, join_layer=3)


@torch.no_grad()
def test_full_cross_encoder_pairs_prepared_once_per_batch_equal_one_pair_at_a_time(tiny_bert_dir):
    """m = 0: each batch tokenizes / collates its distinct texts and images once and repeats them on
    the device; the logits equal scoring every pair on its own (padding shared within a batch)."""
    bi, cross = encoders(tiny_bert_dir, join_layer=0)
    imgs = images()
    pipeline = RetrieveRerank(bi, cross, rerank_batch_size=4, progress=False)
    every = pipeline.score_all(TEXTS, imgs)  # 30 pairs in batches of 4: texts recur within a batch
    for t, text in enumerate(TEXTS):
        batch = [(text, img) for img in imgs]
        ones = torch.cat([cross.score(bi.tokenize([s]), collate_images([i])) for s, i in batch])
        assert torch.allclose(every[t], ones, atol=1e-5)
    pipeline.index_images(imgs)
    result = pipeline.text_to_image(TEXTS[:2], k=3, rerank_top=len(imgs))
    for q in range(2):
        scratch = cross.score(bi.tokenize([TEXTS[q]] * 3), collate_images([imgs[r] for r in result.indices[q]]))
        assert torch.allclose(result.scores[q], scratch, atol=1e-5)


@pytest.mark.parametrize("head", ["attend", "align"])
def test_length_buckets_give_the_logits_and_gradients_of_one_padded_batch(tiny_bert_dir, head):
    """Pairs scored in groups of similar caption length, each cut to its own longest, give the
    logits (and gradients) of one batch padded to the longest caption of all (align: the padded
    words and regions of the word-region matching count for nothing either)."""
    from retrerank.encoders import cross as cross_module

    _, cross = encoders(tiny_bert_dir, cross_head=head)
    torch.manual_seed(1)
    for p in cross.head.parameters():  # a wide head, so that the pairs' logits spread (checked below)
        torch.nn.init.normal_(p, std=1.0)
    captions = [TEXTS[j % len(TEXTS)] + " and a red circle" * (j % 4) for j in range(40)]  # lengths 3..21
    imgs = images(40)
    with torch.no_grad():
        text = cross.lower_text(cross.tokenize(captions))
        image = cross.lower_image(collate_images(imgs))
    assert text[0].shape[0] >= 2 * cross_module.MIN_BUCKET  # (else one group: nothing tested)
    logits = {}
    for buckets in (1, 2):
        cross.length_buckets = buckets
        hidden = text[0].detach().requires_grad_()
        out = cross.score_lower((hidden, text[1]), image)
        (out * torch.arange(len(out))).sum().backward()  # row-dependent weights: a misplaced row shows
        logits[buckets] = out.detach(), hidden.grad
    assert torch.allclose(logits[1][0], logits[2][0], atol=1e-5)
    assert torch.allclose(logits[1][1], logits[2][1], atol=1e-5)
    assert logits[1][0].std() > 0.01  # the pairs' logits differ: a permutation would show


def test_length_buckets_sort_and_restore_rows():
    from retrerank.encoders.cross import MIN_BUCKET, in_length_buckets

    lengths = torch.tensor([5, 1, 4, 1, 3, 9, 2, 8] * (MIN_BUCKET // 2))
    seen = []

    def score(rows):
        seen.append(None if rows is None else lengths[rows])
        return (torch.arange(len(lengths)) if rows is None else rows).float() * 10

    out = in_length_buckets(score, lengths, 3)
    assert torch.equal(out, torch.arange(len(lengths)).float() * 10)  # every row's own result, in place
    assert len(seen) == 3 and all(a.max() <= b.min() for a, b in zip(seen, seen[1:]))  # sorted groups
    seen.clear()
    in_length_buckets(score, lengths[: MIN_BUCKET + 1], 4)
    assert seen == [None]  # too few rows for two groups: one call over all
