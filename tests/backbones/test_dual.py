"""CLIP / SigLIP dual encoders: the bi-encoder is the pretrained model's own towers and
projections, the fusion cross-encoder starts from the text tower, adapters and AdapterDrop act
on both towers, and the pipeline's cached-state rerank equals scoring from scratch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrerank.adapters.inject import adapted_sites
from retrerank.build import build_encoders
from retrerank.config import AdapterConfig, ModelConfig
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.encoders.dual import DualBiEncoder
from retrerank.encoders.fusion_cross import FusionCrossEncoder
from retrerank.retrieval.pipeline import RetrieveRerank
from tests.conftest import widen_adapters

TEXTS = ["a red circle", "a blue square left of a green star", "two small yellow triangles", "a purple star"]


def pictures(n: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    empty = np.zeros((0, 4), np.float32)
    return [ImageRecord(f"img{i}", empty, empty, rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(params=["clip", "siglip"])
def dual_dir(request, tiny_clip_dir, tiny_siglip_dir):
    return tiny_clip_dir if request.param == "clip" else tiny_siglip_dir


def encoders(path, adapters=None, **model):
    torch.manual_seed(0)
    bi, cross = build_encoders(ModelConfig(backbone=path, **{"join_layer": 0, **model}), 0, adapters)
    return bi.eval(), cross.eval()


@torch.no_grad()
def test_bi_encoder_is_the_pretrained_models_own_text_and_image_features(dual_dir):
    bi, cross = encoders(dual_dir)
    assert isinstance(bi, DualBiEncoder) and isinstance(cross, FusionCrossEncoder)
    text, image = bi.tokenize(TEXTS), bi.collate_images(pictures(3))
    assert image["pixel_values"].shape == (3, 3, 32, 32)  # the model's own processor: resized to 32
    model = bi.backbone.encoder
    mask = text["attention_mask"].long() if model.config.model_type == "clip" else None
    reference_text = model.get_text_features(input_ids=text["input_ids"], attention_mask=mask).pooler_output
    reference_image = model.get_image_features(pixel_values=image["pixel_values"]).pooler_output
    assert torch.allclose(bi.embed_texts(text), F.normalize(reference_text, dim=-1), atol=1e-6)
    assert torch.allclose(bi.embed_images(image), F.normalize(reference_image, dim=-1), atol=1e-6)


@torch.no_grad()
def test_fusion_layer_starts_as_the_text_towers_top_layer(tiny_siglip_dir):
    # SigLIP's text layers attend bidirectionally, as the fusion's self-attention does
    bi, cross = encoders(tiny_siglip_dir, fusion_layers=1)
    block, top = cross.fusion[0], bi.backbone.text_layers[-1]
    x = torch.randn(2, 5, bi.backbone.hidden_size)
    image = torch.randn(2, 7, bi.backbone.image_hidden_size)
    ones = torch.ones(2, 5, dtype=torch.bool)
    assert torch.allclose(block(x, ones, image, torch.ones(2, 7, dtype=torch.bool)), top(x, None), atol=1e-5)
    scratch = encoders(tiny_siglip_dir, fusion_layers=1, fusion_init="scratch")[1].fusion[0]
    assert not torch.allclose(scratch.fc1.weight, block.fc1.weight)
    # copied weights train at the pretrained rate, the new cross-attention and head at new_lr
    new = {id(p) for p in cross.new_parameters()}
    assert id(block.cross_attn.q_proj_weight) in new and id(block.fc1.weight) not in new
    assert all(id(p) in new for p in cross.head.parameters())


@torch.no_grad()
def test_cross_encoder_reads_the_image(dual_dir):
    bi, cross = encoders(dual_dir)
    for p in cross.fusion.parameters():  # the zero-initialised cross-attention would hide the image
        torch.nn.init.normal_(p, std=0.3)
    text = bi.tokenize([TEXTS[0]] * 3)
    scores = cross.score(text, bi.collate_images(pictures(3)))
    assert scores.shape == (3,) and scores.std() > 1e-4


@torch.no_grad()
def test_adapters_attach_to_both_towers_and_adapterdrop_removes_them(tiny_clip_dir):
    adapters = AdapterConfig(enabled=True, reduction_factor=4, kind="houlsby")
    bi, _ = encoders(tiny_clip_dir, adapters)
    plain, _ = encoders(tiny_clip_dir)
    backbone = bi.backbone
    # 2 text + 2 vision blocks, attention and MLP sites each, at each tower's width
    sites = adapted_sites(backbone)
    assert len(sites) == 8 and {site.hidden_size for site in sites} == {32, 48}
    widen_adapters(backbone)
    text, image = bi.tokenize(TEXTS), bi.collate_images(pictures(3))
    with_adapters = bi.embed_texts(text)
    backbone.adapter_switch.drop = backbone.num_layers  # AdapterDrop of every block: the plain model
    assert torch.allclose(bi.embed_texts(text), plain.embed_texts(text), atol=1e-6)
    assert torch.allclose(bi.embed_images(image), plain.embed_images(image), atol=1e-6)
    assert not torch.allclose(with_adapters, plain.embed_texts(text), atol=1e-4)


@torch.no_grad()
def test_pipeline_reranks_from_cached_tower_states_as_from_scratch(dual_dir):
    bi, cross = encoders(dual_dir)
    for p in cross.fusion.parameters():
        torch.nn.init.normal_(p, std=0.3)
    images = pictures(4)
    captions = [CaptionRecord(f"c{j}", images[j].image_id, t) for j, t in enumerate(TEXTS)]
    split = RetrievalSplit("test", images, captions)
    pipeline = RetrieveRerank(bi, cross, progress=False)
    scratch = torch.stack([cross.score(bi.tokenize([t] * 4), bi.collate_images(images)) for t in TEXTS])
    # the cache keeps float16 states (measured difference 4e-4 on a score spread of 0.2)
    assert torch.allclose(pipeline.score_all(split.texts, images), scratch, atol=2e-3)
    pipeline.index_images(images)
    assert pipeline.image_states is not None  # the tower states, kept at index time
    result = pipeline.text_to_image(TEXTS, k=4, rerank_top=4)
    assert torch.allclose(result.scores, scratch.gather(1, result.indices), atol=2e-3)
    assert torch.all(result.scores[:, :-1] >= result.scores[:, 1:])  # ranked by the cross-encoder


def test_clear_errors_for_what_the_family_cannot_do(tiny_clip_dir):
    with pytest.raises(ValueError, match="join_layer.*fixed join"):
        encoders(tiny_clip_dir, join_layer=1)
    bi, cross = encoders(tiny_clip_dir)
    regions_only = ImageRecord("r1", np.zeros((2, 8), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="'r1' has no pixels.*clip"):
        bi.collate_images([regions_only])
    with pytest.raises(ValueError, match="joins at a fixed point"):
        with cross.joining_at(1):
            pass


def test_gradient_checkpointing_gives_the_same_gradients(tiny_clip_dir):
    grads = []
    for checkpointing in (False, True):
        bi, _ = encoders(tiny_clip_dir, gradient_checkpointing=checkpointing)
        bi.train()  # checkpointing acts in training only; the tiny model has no dropout
        loss = bi.embed_texts(bi.tokenize(TEXTS)).sum() + bi.embed_images(bi.collate_images(pictures(3))).sum()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in bi.parameters() if p.grad is not None]))
    assert grads[0].numel() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
