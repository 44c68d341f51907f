import numpy as np
import pytest
import torch

from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord


def images(n: int, regions=(2, 4), dim: int = 8) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        r = regions[i % len(regions)]
        xy = rng.uniform(0, 0.5, (r, 2))
        out.append(
            ImageRecord(
                f"im{i}",
                rng.normal(size=(r, dim)).astype(np.float32),
                np.concatenate([xy, xy + 0.3], 1).astype(np.float32),
            )
        )
    return out


@pytest.fixture(scope="module")
def backbone(tiny_bert_dir):
    torch.manual_seed(0)
    return SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8).eval()


def test_loads_local_folder_and_encodes_each_modality(backbone):
    text = backbone.tokenize(["a red circle", "a blue square left of a green star"])
    image = collate_images(images(2))
    h_t, m_t = backbone.encode_text(text)
    h_i, m_i = backbone.encode_image(image)
    h_p, m_p = backbone.encode_pair(text, image)
    assert backbone.num_layers == 2 and backbone.hidden_size == 32
    assert h_t.shape == (2, text["input_ids"].shape[1], 32)
    assert h_i.shape == (2, 1 + 4, 32) and m_i[0].tolist() == [True, True, True, False, False]
    assert h_p.shape == (2, text["input_ids"].shape[1] + 4, 32)
    assert m_p.sum(1).tolist() == (m_t.sum(1) + image["region_mask"].sum(1)).tolist()


def test_text_encoding_matches_the_hf_model(backbone):
    """Running the blocks one by one is the same computation as the HF model's forward."""
    text = backbone.tokenize(["a red circle", "there is a small star"])
    ours, mask = backbone.encode_text(text)
    ref = backbone.encoder(
        input_ids=text["input_ids"],
        attention_mask=text["attention_mask"].long(),
        token_type_ids=torch.zeros_like(text["input_ids"]),
    ).last_hidden_state
    assert torch.allclose(ours[mask], ref[mask], atol=1e-5)


def test_padding_does_not_change_real_tokens(backbone):
    ims = images(2, regions=(2, 5))
    alone, _ = backbone.encode_image(collate_images(ims[:1]))
    padded, _ = backbone.encode_image(collate_images(ims))
    assert torch.allclose(alone[0], padded[0, :3], atol=1e-5)


def test_wrong_feature_width_is_a_clear_error(backbone):
    with pytest.raises(ValueError, match="width 5, the model expects 8"):
        backbone.encode_image(collate_images(images(1, dim=5)))


def test_unknown_backbone_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load backbone"):
        SingleStreamBackbone.from_pretrained(str(tmp_path / "nope"), feature_dim=8)
