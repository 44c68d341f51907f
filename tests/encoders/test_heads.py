"""What the cross-encoder head reads (retrerank.encoders.heads.pair_features), on hand-made states."""

import math

import pytest
import torch

from retrerank.encoders.heads import head_input_size, pair_features

# one pair: 2 text positions, then 3 image positions of which the last is padding
HIDDEN = torch.tensor(
    [
        [
            [1.0, 0.0],
            [1.0, 2.0],  # text: mean (1, 1)
            [2.0, 0.0],
            [0.0, 2.0],
            [9.0, 9.0],
        ]
    ]
)  # regions; (9, 9) is padding
MASK = torch.tensor([[True, True, True, True, False]])


def unit(x, y):
    n = math.hypot(x, y)
    return [x / n, y / n]


def expected(u, v):
    return torch.tensor([u + v + [a * b for a, b in zip(u, v)] + [abs(a - b) for a, b in zip(u, v)]])


def test_halves_reads_the_normalised_text_mean_and_region_mean():
    # text mean (1, 1); region mean over the two real regions (1, 1): the same direction
    out = pair_features("halves", HIDDEN, MASK, 2, "mean")
    assert torch.allclose(out, expected(unit(1, 1), unit(1, 1)), atol=1e-6)


def test_attend_pools_the_regions_by_attention_from_the_text_mean():
    hidden = HIDDEN.clone()
    hidden[0, 1] = torch.tensor([3.0, 0.0])  # text mean (2, 0): about the first region's direction
    # scores (2, 0).(2, 0) / sqrt(2) = 4 / sqrt(2) and (2, 0).(0, 2) / sqrt(2) = 0; padding excluded
    w = 1 / (1 + math.exp(-4 / math.sqrt(2)))
    v = [2 * w, 2 * (1 - w)]
    out = pair_features("attend", hidden, MASK, 2, "mean")
    assert torch.allclose(out, expected(unit(2, 0), unit(*v)), atol=1e-6)
    # the mean would weigh both regions equally
    assert not torch.allclose(out, pair_features("halves", hidden, MASK, 2, "mean"))


def test_padding_never_gets_attention_and_sizes_follow_the_kind():
    hidden = HIDDEN.clone()
    hidden[0, 4] = torch.tensor([1e4, 1e4])  # a huge padded region would take all the weight
    assert torch.allclose(
        pair_features("attend", hidden, MASK, 2, "mean"), pair_features("attend", HIDDEN, MASK, 2, "mean")
    )
    assert [head_input_size(k, 8) for k in ("halves", "attend", "mixed", "pair")] == [32, 32, 56, 8]
    # mixed: u, then the mean view's three parts, then the attention view's
    mixed = pair_features("mixed", HIDDEN, MASK, 2, "mean")
    halves, attend = (pair_features(k, HIDDEN, MASK, 2, "mean") for k in ("halves", "attend"))
    assert torch.equal(mixed, torch.cat([halves, attend[:, 2:]], 1))
    with pytest.raises(ValueError, match="model.cross_head"):
        head_input_size("mean", 8)


def identity_alignment(size: int, tau: float = 0.1):
    """TokenAlignment with identity projections, a zero gate (every word weighs the same) and
    out = mean + soft minimum, so its value can be worked out by hand."""
    from retrerank.encoders.heads import TokenAlignment

    align = TokenAlignment(size, tau=tau)
    with torch.no_grad():
        for proj in (align.text_proj, align.region_proj):
            proj.weight.copy_(torch.eye(size))
            proj.bias.zero_()
        align.gate.weight.zero_()
        align.gate.bias.zero_()
        align.out.weight.fill_(1.0)
    return align


def test_token_alignment_matches_each_word_to_its_best_region_and_reads_the_worst():
    # text: (1, 0) and (1, 2); real regions (2, 0) and (0, 2); the padded (9, 9) must not count.
    # best matches: word 1 -> region 1, cos 1; word 2 -> region 2, cos 2 / sqrt(5)
    align = identity_alignment(2)
    best = torch.tensor([1.0, 2 / math.sqrt(5)])
    mean = best.mean()
    softmin = -0.1 * torch.log((0.5 * torch.exp(-best / 0.1)).sum())
    assert softmin < mean and softmin > best.min() - 0.1 * math.log(2) - 1e-6  # near the worst word
    out = align(HIDDEN, MASK, 2)
    assert out.shape == (1,)
    assert out.item() == pytest.approx((mean + softmin).item(), abs=1e-5)


def test_token_alignment_tells_a_colour_swap_that_pooled_text_cannot():
    """Two words, each the sum of a colour and a shape direction; the image has a red circle and a
    green star. The swapped caption (green circle, red star) has the same pooled text, so attend's
    features are equal, but its words find no exact region and the alignment term drops."""
    red, green, circle, star = torch.eye(4)
    regions = torch.stack([red + circle, green + star])
    true = torch.stack([red + circle, green + star])
    swapped = torch.stack([green + circle, red + star])
    mask = torch.ones(1, 4, dtype=torch.bool)

    def pair(words):
        return torch.cat([words, regions])[None]

    assert torch.allclose(
        pair_features("attend", pair(true), mask, 2, "mean"), pair_features("attend", pair(swapped), mask, 2, "mean")
    )
    align = identity_alignment(4)
    assert align(pair(true), mask, 2).item() == pytest.approx(2.0, abs=1e-5)  # every word cos 1
    assert align(pair(swapped), mask, 2).item() == pytest.approx(1.0, abs=1e-5)  # every word cos 1/2


def test_the_align_head_adds_the_alignment_to_the_attend_heads_logit(tiny_bert_dir):
    from retrerank.backbones.single_stream import SingleStreamBackbone
    from retrerank.encoders.cross import CrossEncoder

    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8, dropout=0.0)
    align, attend = (CrossEncoder(backbone, dropout=0.0, join_layer=1, head_kind=k) for k in ("align", "attend"))
    attend.head.load_state_dict(align.head.state_dict())
    hidden, mask = torch.randn(3, 7, backbone.hidden_size), torch.ones(3, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(align.read(hidden, mask, 4), attend.read(hidden, mask, 4) + align.align(hidden, mask, 4))
    assert set(map(id, align.align.parameters())) <= set(map(id, align.new_parameters()))  # trained at optim.new_lr
    assert attend.align is None
