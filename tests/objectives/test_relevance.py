"""Exact relevance in the losses and negative samplers: a caption's true matches are never negatives."""

import math

import pytest
import torch
import torch.nn.functional as F

from retrerank.objectives.contrastive import InfoNCE
from retrerank.objectives.listwise import listwise_loss
from retrerank.objectives.matching import sample_negatives
from retrerank.objectives.relevance import true_of
from retrerank.objectives.sigmoid import SigmoidPairs

# three captions of images 4, 5, 6; caption 0 ("a red circle") is also true of image 6
INDEX = torch.tensor([4, 5, 6])
RELEVANT = torch.tensor([[4, 6], [5, -1], [6, -1]])


def test_true_of_reads_relevant_rows_or_falls_back_to_the_own_image():
    assert true_of(RELEVANT, INDEX, INDEX).tolist() == [[True, False, True], [False, True, False], [False, False, True]]
    assert true_of(None, INDEX, torch.tensor([6, 4])).tolist() == [[False, True], [False, False], [True, False]]


def test_infonce_masks_every_true_match_in_both_directions():
    torch.manual_seed(0)
    text, image = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    loss = InfoNCE(0.1)(text, image, INDEX, relevant=RELEVANT)
    t2i, i2t = 10.0 * text @ image.T, 10.0 * image @ text.T
    t2i[0, 2] = float("-inf")  # caption 0 is true of image 6: not a negative of caption 0
    i2t[2, 0] = float("-inf")  # nor is caption 0 a negative of image 6
    target = torch.arange(3)
    expected = (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(InfoNCE(0.1)(text, image, INDEX).item(), rel=1e-3)


def test_sigmoid_counts_a_true_match_as_a_match():
    torch.manual_seed(0)
    text, image = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    loss = SigmoidPairs(0.1, -1.0)(text, image, INDEX, relevant=RELEVANT)
    logits = 10.0 * text @ image.T - 1.0
    sign = -torch.ones(3, 3)
    sign[0, 0] = sign[1, 1] = sign[2, 2] = sign[0, 2] = 1.0
    assert loss.item() == pytest.approx((-F.logsigmoid(sign * logits).sum() / 3).item(), rel=1e-5)


def test_sampled_negatives_never_draw_a_true_match():
    similarity = torch.tensor(
        [[0.0, 0.0, 50.0], [0.0, 0.0, 0.0], [50.0, 0.0, 0.0]]
    )  # the true match is the most similar
    match = true_of(RELEVANT, INDEX, INDEX)
    for seed in range(20):
        t2i, i2t, valid = sample_negatives(similarity, INDEX, 1, torch.Generator().manual_seed(seed), match=match)
        assert valid.all()
        assert t2i[0, 0] == 1 and i2t[2, 0] == 1  # caption 0 / image 6 have one negative left each


def test_a_row_without_negatives_in_one_direction_is_invalid():
    # caption 0 is true of both images; image 1 then has no negative caption either
    index, relevant = torch.tensor([0, 1]), torch.tensor([[0, 1], [1, -1]])
    _, _, valid = sample_negatives(torch.zeros(2, 2), index, 1, match=true_of(relevant, index, index))
    assert valid.tolist() == [False, False]


def test_listwise_loss_is_cross_entropy_with_the_positive_first():
    positive = torch.tensor([2.0, 0.0])
    t2i = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i2t = torch.tensor([[3.0], [-1.0]])
    # by hand: -log(e^p / (e^p + sum e^n)) per row, averaged per direction, then halved
    row = lambda p, ns: -(p - math.log(math.exp(p) + sum(math.exp(n) for n in ns)))  # noqa: E731
    t2i_loss = (row(2.0, [1.0, 0.0]) + row(0.0, [0.0, 1.0])) / 2
    i2t_loss = (row(2.0, [3.0]) + row(0.0, [-1.0])) / 2
    assert listwise_loss(positive, t2i, i2t).item() == pytest.approx((t2i_loss + i2t_loss) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="2 positives"):
        listwise_loss(positive, t2i[:1], i2t)
