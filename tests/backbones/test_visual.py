import math

import numpy as np
import pytest
import torch

from retrerank.backbones.visual import FOURIER_FREQUENCIES, VisualEmbedding, box_geometry, fourier_geometry
from retrerank.build import build_backbone, build_encoders
from retrerank.config import ModelConfig
from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord


def test_fourier_geometry_by_hand():
    box = torch.tensor([[0.25, 0.0, 0.5, 0.5]])  # geometry (0.25, 0, 0.5, 0.5, w 0.25, h 0.5)
    out = fourier_geometry(box)[0]
    f = len(FOURIER_FREQUENCIES)
    assert out.shape == (6 + 6 * 2 * f,)
    assert torch.allclose(out[:6], torch.tensor([0.25, 0.0, 0.5, 0.5, 0.25, 0.5]))
    sines, cosines = out[6 : 6 + 6 * f], out[6 + 6 * f :]
    # frequency 1 (the first 6 angles): x1 = 0.25 is a quarter turn, y1 = 0 none, x2 = 0.5 half a turn
    assert torch.allclose(sines[:3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cosines[:3], torch.tensor([0.0, 1.0, -1.0]), atol=1e-6)
    # frequency 2 of x1 = 0.25: half a turn
    assert math.isclose(float(cosines[6]), -1.0, abs_tol=1e-6)


def _centre_column_fit(encode) -> float:
    """Accuracy of a least-squares linear read-out of "in the centre column" from encoded boxes."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.9, 600)
    boxes = torch.tensor(np.stack([x, np.full_like(x, 0.2), x + 0.1, np.full_like(x, 0.3)], 1), dtype=torch.float64)
    centre = ((x + 0.05 > 1 / 3) & (x + 0.05 < 2 / 3)).astype(np.float64)  # the box's middle in the middle third
    features = torch.cat([encode(boxes), torch.ones(len(x), 1, dtype=torch.float64)], 1).numpy()
    weights, *_ = np.linalg.lstsq(features, centre * 2 - 1, rcond=None)
    return float(((features @ weights > 0) == (centre > 0)).mean())


def test_fourier_features_make_a_middle_column_linearly_readable():
    """Why the option exists: "in the centre" is a band of x, which no linear map of raw coordinates
    separates from both sides; with the sines and cosines one linear layer reads it."""
    assert _centre_column_fit(box_geometry) < 0.75
    assert _centre_column_fit(fourier_geometry) > 0.97


def test_visual_embedding_reads_the_fourier_geometry():
    torch.manual_seed(0)
    emb = VisualEmbedding(8, 16, dropout=0.0, box_encoding="fourier").eval()
    assert emb.box_proj.in_features == 6 * (1 + 2 * len(FOURIER_FREQUENCIES))
    features = torch.zeros(1, 2, 8)
    left, right = torch.tensor([[0.0, 0.4, 0.2, 0.6]]), torch.tensor([[0.8, 0.4, 1.0, 0.6]])
    out = emb(features, torch.stack([left, right], 1))
    assert out.shape == (1, 2, 16) and not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="box_encoding must be one of"):
        VisualEmbedding(8, 16, box_encoding="sinusoid")


def test_backbone_built_with_fourier_boxes_encodes_images(tiny_bert_dir):
    bi, cross = build_encoders(ModelConfig(backbone=tiny_bert_dir, join_layer=1, box_encoding="fourier"), 8)
    assert bi.backbone is cross.backbone and bi.backbone.visual.box_proj.in_features == 54
    rng = np.random.default_rng(0)
    ims = [
        ImageRecord(
            f"im{i}",
            rng.normal(size=(3, 8)).astype(np.float32),
            np.array([[0.0, 0.0, 0.2, 0.2], [0.4, 0.4, 0.6, 0.6], [0.7, 0.1, 0.9, 0.3]], np.float32),
        )
        for i in range(2)
    ]
    emb = bi.embed_images(collate_images(ims))
    assert emb.shape[0] == 2 and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_fourier_boxes_on_a_family_without_boxes_is_a_clear_error(tiny_clip_dir):
    with pytest.raises(ValueError, match="box_encoding=fourier: the dual family does not embed region boxes"):
        build_backbone(ModelConfig(backbone=tiny_clip_dir, join_layer=0, box_encoding="fourier"), lambda: 8)
