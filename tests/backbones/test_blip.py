"""BLIP: the bi-encoder is the model's own ITC, the cross-encoder its ITM head (compared with
Hugging Face's BlipForImageTextRetrieval); retrieval computes each item's states once for both
and the cached-state rerank equals scoring from scratch; adapters and AdapterDrop act on both
towers; what the family cannot do fails clearly."""

import numpy as np
import pytest
import torch

from retrerank.adapters.inject import adapted_sites
from retrerank.adapters.training import select_trainable
from retrerank.build import build_encoders
from retrerank.config import AdapterConfig, ModelConfig, ObjectiveConfig, OptimConfig
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.encoders.blip import BlipBiEncoder, BlipCrossEncoder
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.systems.joint import JointRetrievalSystem
from tests.backbones.test_dual import TEXTS, pictures
from tests.conftest import widen_adapters


def encoders(path, adapters=None, **model):
    torch.manual_seed(0)
    bi, cross = build_encoders(ModelConfig(backbone=path, **{"join_layer": 0, **model}), 0, adapters)
    # HF's initialisation (std 0.02) gives every pair nearly the same score: widen the weights
    # (the same draws with or without adapters) so that scores and rankings differ
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in bi.backbone.encoder.named_parameters():
            if p.dim() > 1 and ".adapters." not in name:
                torch.nn.init.normal_(p, std=0.2)
    return bi.eval(), cross.eval()


@torch.no_grad()
def test_bi_and_cross_encoder_are_the_models_own_itc_and_itm(tiny_blip_dir):
    bi, cross = encoders(tiny_blip_dir)
    assert isinstance(bi, BlipBiEncoder) and isinstance(cross, BlipCrossEncoder)
    assert bi.backbone is cross.backbone and cross.new_parameters() == []
    text, image = bi.tokenize(TEXTS[:3]), bi.collate_images(pictures(3))
    assert image["pixel_values"].shape == (3, 3, 32, 32)  # BLIP's own processor: resized to 32
    assert text["attention_mask"][:, -1].tolist().count(False) >= 1  # padded texts: the mask matters
    model, mask = bi.backbone.encoder, text["attention_mask"].long()
    # ITC: HF returns the cosine matrix images x texts
    itc = model(
        input_ids=text["input_ids"], attention_mask=mask, pixel_values=image["pixel_values"], use_itm_head=False
    ).itm_score
    assert torch.allclose(bi.embed_images(image) @ bi.embed_texts(text).T, itc, atol=1e-6)
    # ITM: HF scores the aligned pairs; ours is logit(match) - logit(no match)
    itm = model(
        input_ids=text["input_ids"], attention_mask=mask, pixel_values=image["pixel_values"], use_itm_head=True
    ).itm_score
    scores = cross.score(text, image)
    assert scores.shape == (3,) and torch.allclose(scores, itm[:, 1] - itm[:, 0], atol=1e-5)
    assert torch.allclose(scores.sigmoid(), itm.softmax(-1)[:, 1], atol=1e-6)
    # the ITM head reads the image: same text, other pictures, other scores
    assert cross.score(bi.tokenize([TEXTS[0]] * 3), image).std() > 0.1


@torch.no_grad()
def test_pipeline_computes_states_once_and_reranks_from_cache_as_from_scratch(tiny_blip_dir):
    bi, cross = encoders(tiny_blip_dir)
    assert bi.shares_lower_layers(cross)
    images = pictures(4)
    captions = [CaptionRecord(f"c{j}", images[j].image_id, t) for j, t in enumerate(TEXTS)]
    split = RetrievalSplit("test", images, captions)
    pipeline = RetrieveRerank(bi, cross, progress=False)
    scratch = torch.stack([cross.score(bi.tokenize([t] * 4), bi.collate_images(images)) for t in TEXTS])
    assert torch.allclose(pipeline.score_all(split.texts, images), scratch, atol=2e-3)  # float16 cache
    pipeline.index_images(images)
    pipeline.index_texts(TEXTS)
    assert pipeline.image_states is not None and pipeline.text_states is not None
    # one pass gives both the ITC embeddings and the cached states
    for items, kind, embed in (
        (TEXTS, "texts", lambda: bi.embed_texts(bi.tokenize(TEXTS))),
        (images, "images", lambda: bi.embed_images(bi.collate_images(images))),
    ):
        embeddings, cache = pipeline._encode(items, kind)
        assert len(cache) == 4 and torch.allclose(embeddings, embed(), atol=1e-6)
    result = pipeline.text_to_image(TEXTS, k=4, rerank_top=4)
    assert torch.allclose(result.scores, scratch.gather(1, result.indices), atol=2e-3)
    assert torch.all(result.scores[:, :-1] >= result.scores[:, 1:])  # ranked by ITM
    result = pipeline.image_to_text(images, k=4, rerank_top=4)
    assert torch.allclose(result.scores, scratch.T.gather(1, result.indices), atol=2e-3)
    # ITM + ITC: the pipeline's cross+bi scoring adds the weighted cosine
    both = RetrieveRerank(bi, cross, progress=False, scoring="cross+bi", bi_weight=0.5)
    both.index_images(images)
    result = both.text_to_image(TEXTS, k=4, rerank_top=4)
    cosine = bi.embed_texts(bi.tokenize(TEXTS)) @ bi.embed_images(bi.collate_images(images)).T
    assert torch.allclose(result.scores, (scratch + 0.5 * cosine).gather(1, result.indices), atol=2e-3)


@torch.no_grad()
def test_adapters_attach_to_both_towers_and_adapterdrop_removes_them(tiny_blip_dir):
    adapters = AdapterConfig(enabled=True, reduction_factor=4, kind="houlsby")
    bi, cross = encoders(tiny_blip_dir, adapters)
    plain_bi, plain_cross = encoders(tiny_blip_dir)
    backbone = bi.backbone
    # 2 text + 2 vision blocks, attention and feed-forward sites each, at each tower's width
    sites = adapted_sites(backbone)
    assert len(sites) == 8 and {site.hidden_size for site in sites} == {32, 48}
    assert all(
        not any(".crossattention." in name for name, _ in layer.named_modules() if ".adapters." in name)
        for layer in backbone.text_layers
    )
    widen_adapters(backbone)
    text, image = bi.tokenize(TEXTS), bi.collate_images(pictures(4))
    with_adapters = bi.embed_texts(text), bi.embed_images(image), cross.score(text, image)
    backbone.adapter_switch.drop = backbone.num_layers  # AdapterDrop of every block: the plain model
    plain = plain_bi.embed_texts(text), plain_bi.embed_images(image), plain_cross.score(text, image)
    dropped = bi.embed_texts(text), bi.embed_images(image), cross.score(text, image)
    for a, b, c in zip(with_adapters, plain, dropped):
        assert torch.allclose(c, b, atol=1e-5) and not torch.allclose(a, b, atol=1e-4)
    # several sets over one image: the parallel path runs the vision tower once per set
    hidden, mask = backbone.parallel_inputs(text, image)
    outputs = backbone.encode_parallel(hidden, mask, ["shared", "shared"], shared=1)
    assert len(outputs) == 2 and torch.allclose(outputs[0], outputs[1])


def test_adapter_training_trains_adapters_and_temperature_only(tiny_blip_dir):
    adapters = AdapterConfig(enabled=True)
    bi, cross = build_encoders(ModelConfig(backbone=tiny_blip_dir, join_layer=0), 0, adapters)
    system = JointRetrievalSystem(bi, cross, ObjectiveConfig(), OptimConfig(), adapters=adapters)
    select_trainable(system, adapters.train)
    trained = [name for name, p in system.named_parameters() if p.requires_grad]
    assert trained and all(".adapters." in name or name.startswith("contrastive.") for name in trained)
    assert any("vision_model" in name for name in trained) and any("text_encoder" in name for name in trained)
    select_trainable(system, ["adapters", "backbone"])  # the ITM head and projections are pretrained: "backbone"
    assert system.backbone.encoder.itm_head.weight.requires_grad


def test_clear_errors_for_what_the_family_cannot_do(tiny_blip_dir, tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="join_layer.*fixed join"):
        encoders(tiny_blip_dir, join_layer=1)
    bi, cross = encoders(tiny_blip_dir)
    regions_only = ImageRecord("r1", np.zeros((2, 8), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="'r1' has no pixels.*blip"):
        bi.collate_images([regions_only])
    with pytest.raises(ValueError, match="fixed point.*cannot join at 1"):
        with cross.joining_at(1):
            pass
    with pytest.raises(ValueError, match="fixed join"):
        bi.texts_lower(bi.tokenize(TEXTS), 1)
    # a BLIP checkpoint without the retrieval heads (captioning, VQA) is refused, not filled at random
    from transformers import BlipForConditionalGeneration

    model = BlipForConditionalGeneration.from_pretrained(tiny_blip_dir)
    model.save_pretrained(tmp_path / "captioning")
    bi.backbone.tokenizer.save_pretrained(tmp_path / "captioning")
    with pytest.raises(ValueError, match="not a BLIP image-text retrieval checkpoint"):
        encoders(str(tmp_path / "captioning"))
