"""SigLIP's sigmoid loss on a hand-made batch: every cell is its own match / no-match decision."""

import math

import pytest
import torch

from retrerank.config import load
from retrerank.objectives.sigmoid import SigmoidPairs


def by_hand(text, image, image_index, t, b, extra=()):
    """Sum over cells of -log sigmoid(z (t cos + b)), z = +1 for one image, over the caption rows."""

    def cell(u, v, same):
        z = 1.0 if same else -1.0
        return -math.log(1 / (1 + math.exp(-z * (t * float(u @ v) + b))))

    total = sum(
        cell(text[i], image[j], image_index[i] == image_index[j]) for i in range(len(text)) for j in range(len(image))
    )
    for rows, columns, column_index in extra:
        total += sum(
            cell(rows[i], columns[j], image_index[i] == column_index[j])
            for i in range(len(rows))
            for j in range(len(columns))
        )
    return total / len(text)


def test_sigmoid_loss_is_the_sum_over_cells_with_captions_of_one_image_as_matches():
    torch.manual_seed(0)
    norm = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    text, image = norm(torch.randn(3, 4)), norm(torch.randn(3, 4))
    index = torch.tensor([5, 5, 2])  # captions 0 and 1 describe one image: (0, 1) and (1, 0) are matches too
    loss = SigmoidPairs(temperature=0.5, bias=-1.0)
    assert loss(text, image, index).item() == pytest.approx(by_hand(text, image, index.tolist(), 2.0, -1.0), rel=1e-5)
    neg_image, neg_text = norm(torch.randn(2, 4)), norm(torch.randn(4, 4))
    neg_image_index, neg_text_index = torch.tensor([7, 2]), torch.tensor([8, 9, 5, 1])
    expected = by_hand(
        text,
        image,
        index.tolist(),
        2.0,
        -1.0,
        [(text, neg_image, neg_image_index.tolist()), (image, neg_text, neg_text_index.tolist())],
    )
    value = loss(text, image, index, neg_image, neg_image_index, neg_text, neg_text_index)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert loss.bias.grad != 0 and loss.log_scale.grad != 0  # both learn


def test_the_bias_moves_towards_the_share_of_negatives():
    """With random embeddings, most cells are negatives: a bias of 0 costs more than SigLIP's -10 start."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    image = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    index = torch.arange(32)
    assert SigmoidPairs(0.1, -10.0)(text, image, index) < SigmoidPairs(0.1, 0.0)(text, image, index)


def test_the_system_builds_the_configured_loss(tiny_bert_dir):
    from retrerank.build import build_system

    cfg = load(
        None,
        [
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            "objective.contrastive=sigmoid",
            "objective.temperature=0.1",
            "objective.sigmoid_bias=-7",
        ],
    )
    system = build_system(cfg)
    assert isinstance(system.contrastive, SigmoidPairs) and system.contrastive.bias.item() == -7.0
    assert system.contrastive.temperature == pytest.approx(0.1)
    with pytest.raises(Exception, match="objective.contrastive"):
        load(None, ["objective.contrastive=softmax"])


@pytest.mark.parametrize("family, loss", [("siglip", "sigmoid"), ("clip", "infonce")])
def test_loss_init_model_starts_from_the_checkpoints_own_scale_and_bias(
    family, loss, tiny_siglip_dir, tiny_clip_dir, tiny_bert_dir
):
    from retrerank.build import build_system
    from retrerank.config import ConfigError

    folder = {"siglip": tiny_siglip_dir, "clip": tiny_clip_dir}[family]
    args = [
        f"model.backbone={folder}",
        f"objective.contrastive={loss}",
        "objective.temperature=0.5",
        "objective.sigmoid_bias=-1",
        "data.synthetic.image_size=32",
        "model.join_layer=0",
    ]
    assert build_system(load(None, args)).contrastive.log_scale.item() == pytest.approx(math.log(2.0))  # config
    system = build_system(load(None, args + ["objective.loss_init=model"]))
    model = system.backbone.encoder
    assert system.contrastive.log_scale.item() == pytest.approx(model.logit_scale.item())
    assert model.logit_scale.item() != pytest.approx(math.log(2.0))
    if loss == "sigmoid":
        assert system.contrastive.bias.item() == pytest.approx(model.logit_bias.item()) != -1.0
    with pytest.raises(ConfigError, match="objective.loss_init"):  # a text encoder has no logit scale
        build_system(load(None, [f"model.backbone={tiny_bert_dir}", "model.join_layer=1", "objective.loss_init=model"]))
