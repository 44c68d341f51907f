"""VisualBERT as a single-stream backbone: its own visual embeddings, its own blocks, run by us."""

import pytest
import torch

from retrerank.adapters.inject import add_adapter_set
from retrerank.adapters.training import select_trainable
from retrerank.backbones import visual_bert
from retrerank.backbones.families import family_of
from retrerank.backbones.visual_bert import VisualBertBackbone
from retrerank.build import build_backbone
from retrerank.config import AdapterConfig, ModelConfig
from retrerank.data.collate import collate_images
from tests.backbones.test_single_stream import images
from tests.conftest import save_tiny_visualbert


@pytest.fixture(scope="module")
def backbone(tiny_visualbert_dir):
    torch.manual_seed(0)
    return VisualBertBackbone.from_pretrained(tiny_visualbert_dir, feature_dim=128).eval()


def inputs(backbone):
    text = backbone.tokenize(["a red circle", "a blue square left of a green star"])
    return text, collate_images(images(2, regions=(2, 4), dim=128))


def test_is_its_own_family_with_no_new_visual_embedding(tiny_visualbert_dir):
    assert family_of(tiny_visualbert_dir) == "visual_bert"
    backbone = build_backbone(ModelConfig(backbone=tiny_visualbert_dir), lambda: 128)
    assert isinstance(backbone, VisualBertBackbone) and backbone.visual is None
    assert backbone.num_layers == 2 and backbone.hidden_size == 32 and backbone.input_kind == "regions"


def test_region_embedding_is_visualberts_own(backbone):
    """Words and regions embedded by us == VisualBertEmbeddings(input_ids, visual_embeds=...)."""
    text, image = inputs(backbone)
    ours, mask = backbone.embed_pair(text, image)
    ids = text["input_ids"]
    ref = backbone.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids), visual_embeds=image["features"])
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)
    assert mask.tolist() == torch.cat([text["attention_mask"], image["region_mask"]], 1).tolist()


def test_boxes_are_not_used(backbone):
    text, image = inputs(backbone)
    moved = dict(image, boxes=torch.rand_like(image["boxes"]))
    assert torch.equal(backbone.encode_image(image)[0], backbone.encode_image(moved)[0])


def test_pair_encoding_matches_the_hf_model(backbone):
    """Our block-by-block run over [CLS] words [SEP] regions is VisualBertModel's own forward."""
    text, image = inputs(backbone)
    ours, mask = backbone.encode_pair(text, image)
    ids = text["input_ids"]
    ref = backbone.encoder(
        input_ids=ids,
        attention_mask=text["attention_mask"].long(),
        token_type_ids=torch.zeros_like(ids),
        visual_embeds=image["features"],
        visual_attention_mask=image["region_mask"].long(),
    ).last_hidden_state
    assert torch.allclose(ours[mask], ref[mask], atol=1e-5)


def test_padding_does_not_change_real_tokens(backbone):
    ims = images(2, regions=(2, 5), dim=128)
    alone, _ = backbone.encode_image(collate_images(ims[:1]))
    padded, _ = backbone.encode_image(collate_images(ims))
    assert torch.allclose(alone[0], padded[0, :3], atol=1e-5)


def test_dataset_width_other_than_visual_embedding_dim_is_a_clear_error(tiny_visualbert_dir, backbone):
    with pytest.raises(
        ValueError, match=r"model.backbone=.*embeds 128-d region features.*dataset's region features are 64-d"
    ):
        build_backbone(ModelConfig(backbone=tiny_visualbert_dir), lambda: 64)
    with pytest.raises(ValueError, match="width 5, the model expects 128"):
        backbone.encode_image(collate_images(images(1, dim=5)))


def test_adapters_attach_and_visual_embeddings_are_the_visual_part(tiny_visualbert_dir):
    backbone = VisualBertBackbone.from_pretrained(tiny_visualbert_dir, feature_dim=128).eval()
    text, image = inputs(backbone)
    before = backbone.encode_pair(text, image)[0]
    added = add_adapter_set(backbone, "x", AdapterConfig(enabled=True, kind="houlsby"))
    assert len(added) == 2 * 2  # attention and feed-forward sites of both blocks
    with backbone.adapter_switch.use("x"):
        after = backbone.encode_pair(text, image)[0]
    assert after.shape == before.shape and not torch.equal(after, before)
    # pretrained in real checkpoints: trained with adapters.train=[..., visual], at optim.lr (not new)
    visual = {
        id(p)
        for m in ("visual_projection", "visual_token_type_embeddings", "visual_position_embeddings")
        for p in getattr(backbone.embeddings, m).parameters()
    }
    assert {id(p) for p in backbone.new_parameters()} == {id(p) for a in added for p in a.parameters()}
    select_trainable(backbone, ["adapters", "visual"])
    trained = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert trained == visual | {id(p) for a in added for p in a.parameters()}


def test_checkpoint_without_tokenizer_uses_berts_uncased_vocabulary(tmp_path, tiny_bert_dir, monkeypatch):
    folder = tmp_path / "no-tokenizer"
    save_tiny_visualbert(folder)
    for f in folder.iterdir():
        if "token" in f.name or f.name.startswith(("vocab", "special")):
            f.unlink()
    monkeypatch.setattr(visual_bert, "BERT_UNCASED", tiny_bert_dir)  # stands in for google-bert/bert-base-uncased
    backbone = VisualBertBackbone.from_pretrained(str(folder), feature_dim=128)
    assert backbone.tokenizer.vocab_size > 5 and backbone.tokenizer.name_or_path == tiny_bert_dir
