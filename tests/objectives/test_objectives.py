import math

import pytest
import torch
import torch.nn.functional as F

from retrerank.objectives.contrastive import InfoNCE
from retrerank.objectives.matching import matching_loss, sample_negatives


def test_infonce_matches_hand_computed_value():
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    image = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    loss = InfoNCE(temperature=0.5)(text, image, torch.tensor([0, 1]))
    logits = 2.0 * text @ image.T
    expected = 0.0
    for m in (logits, logits.T):
        expected += -sum(math.log(torch.softmax(m[i], 0)[i].item()) for i in range(2)) / 2
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)


def test_captions_of_the_same_image_are_not_negatives():
    # rows 0 and 1 are two captions of image 7: their cross cells must not count
    text = F.normalize(torch.randn(3, 4), dim=-1)
    image = F.normalize(torch.randn(3, 4), dim=-1)
    image[1] = image[0]
    with_dupes = InfoNCE(0.1)(text, image, torch.tensor([7, 7, 3]))
    logits = 10.0 * text @ image.T
    logits[0, 1] = logits[1, 0] = float("-inf")
    target = torch.arange(3)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert with_dupes.item() == pytest.approx(expected.item(), rel=1e-5)


def test_temperature_is_learnable_and_clamped():
    loss_fn = InfoNCE(0.07)
    assert loss_fn.temperature == pytest.approx(0.07, rel=1e-4)
    assert loss_fn.log_scale.requires_grad
    assert not InfoNCE(0.07, learnable=False).log_scale.requires_grad
    loss_fn.log_scale.data.fill_(10.0)
    assert loss_fn.scale.item() == 100.0


def test_hard_negatives_never_pick_the_same_image_and_prefer_similar_ones():
    sim = torch.tensor([[9.0, 8.0, -9.0, -9.0], [8.0, 9.0, -9.0, -9.0], [-9.0, -9.0, 9.0, 0.0], [-9.0, -9.0, 0.0, 9.0]])
    index = torch.tensor([0, 0, 1, 2])  # texts 0 and 1 describe the same image
    gen = torch.Generator().manual_seed(0)
    t2i, i2t, valid = sample_negatives(sim, index, 1, generator=gen)
    assert valid.all()
    for row in range(4):
        assert index[t2i[row, 0]] != index[row] and index[i2t[row, 0]] != index[row]
    assert t2i[2, 0] == 3 and t2i[3, 0] == 2  # the only non-negligible choices


def test_rows_without_negatives_are_invalid_and_few_negatives_repeat():
    index = torch.tensor([0, 0, 1])
    t2i, i2t, valid = sample_negatives(torch.zeros(3, 3), index, 3)
    assert valid.tolist() == [True, True, True]
    assert set(t2i[0].tolist()) == {2} and set(t2i[2].tolist()) <= {0, 1}
    _, _, valid = sample_negatives(torch.zeros(2, 2), torch.tensor([4, 4]), 1)
    assert valid.tolist() == [False, False]


def test_matching_loss_is_bce_with_ones_then_zeros():
    pos, neg = torch.tensor([2.0]), torch.tensor([-1.0, 0.5])
    expected = (F.softplus(-pos).sum() + F.softplus(neg).sum()) / 3
    assert matching_loss(pos, neg).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mined_negatives_are_extra_columns_with_the_rows_own_image_masked():
    torch.manual_seed(0)
    text, image, extra_image, extra_text = (F.normalize(torch.randn(n, 4), dim=-1) for n in (3, 3, 2, 2))
    index = torch.tensor([7, 7, 3])
    extra_image_index, extra_text_index = torch.tensor([5, 3]), torch.tensor([7, 9])  # 3 is row 2's, 7 rows 0/1's
    loss = InfoNCE(0.1)(text, image, index, extra_image, extra_image_index, extra_text, extra_text_index)
    t2i = 10.0 * torch.cat([text @ image.T, text @ extra_image.T], 1)
    i2t = 10.0 * torch.cat([image @ text.T, image @ extra_text.T], 1)
    for logits in (t2i, i2t):
        logits[0, 1] = logits[1, 0] = float("-inf")  # captions of one image
    t2i[2, 4] = float("-inf")  # mined image 3 is row 2's own
    i2t[0, 3] = i2t[1, 3] = float("-inf")  # mined caption of image 7 belongs to rows 0 and 1
    target = torch.arange(3)
    expected = (F.cross_entropy(t2i, target) + F.cross_entropy(i2t, target)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > InfoNCE(0.1)(text, image, index).item()  # more negatives, larger loss


def test_sampled_pairs_are_blocks_of_the_rows_with_negatives_and_never_true_matches():
    from retrerank.objectives.matching import sampled_pairs

    torch.manual_seed(0)
    image_index = torch.tensor([0, 0, 1, 2])  # rows 0 and 1: two captions of one image
    text = {"ids": torch.arange(4)[:, None]}
    image = {"rows": image_index[:, None]}
    emb = F.normalize(torch.randn(4, 3), dim=-1)
    blocks, valid = sampled_pairs(text, image, image_index, emb, emb, 10.0, hard=1, uniform=1)
    assert valid.tolist() == [True] * 4
    (t2i_text, t2i_rows, t2i_image, t2i_negs), (i2t_text, i2t_negs, i2t_image, i2t_rows) = blocks
    assert t2i_text is text and t2i_image is image and i2t_text is text and i2t_image is image
    assert t2i_rows.tolist() == i2t_rows.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # item-major, 2 per row
    assert (image_index[t2i_negs] != image_index[t2i_rows]).all()  # no caption paired with its own image
    assert (image_index[i2t_negs] != image_index[i2t_rows]).all()


def test_own_foils_are_extra_i2t_columns_of_their_own_image_only():
    """own_text (foils): image r's i2t softmax gains its own foils' columns, no other row does, t2i is unchanged."""
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    foils = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # [B, f=1, E]: image 0's foil, image 1's foil
    loss = InfoNCE(temperature=1.0, learnable=False)(text, image, torch.tensor([0, 1]), own_text=foils)
    # t2i: caption 0 over (0.6, 0.8), caption 1 over (0.8, 0.6); i2t: image 0 over captions (0.6, 0.8)
    # and its foil 0.8, image 1 over (0.8, 0.6) and its foil 0.8
    t2i = (
        -math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8)))
        - math.log(math.exp(0.6) / (math.exp(0.8) + math.exp(0.6)))
    ) / 2
    i2t = (
        -math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8) + math.exp(0.8)))
        - math.log(math.exp(0.6) / (math.exp(0.8) + math.exp(0.6) + math.exp(0.8)))
    ) / 2
    assert loss.item() == pytest.approx((t2i + i2t) / 2, rel=1e-6)
