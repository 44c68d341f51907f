"""What the cross-encoder head reads (retrerank.encoders.heads.pair_features), on hand-made states."""
import math

import pytest
import torch

from retrerank.encoders.heads import head_input_size, pair_features

# one pair: 2 text positions, then 3 image positions of which the last is padding
HIDDEN = torch.tensor([[[1.0, 0.0], [1.0, 2.0],  # text: mean (1, 1)
                        [2.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])  # regions; (9, 9) is padding
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
    assert torch.allclose(pair_features("attend", hidden, MASK, 2, "mean"),
                          pair_features("attend", HIDDEN, MASK, 2, "mean"))
    assert [head_input_size(k, 8) for k in ("halves", "attend", "mixed", "pair")] == [32, 32, 56, 8]
    # mixed: u, then the mean view's three parts, then the attention view's
    mixed = pair_features("mixed", HIDDEN, MASK, 2, "mean")
    halves, attend = (pair_features(k, HIDDEN, MASK, 2, "mean") for k in ("halves", "attend"))
    assert torch.equal(mixed, torch.cat([halves, attend[:, 2:]], 1))
    with pytest.raises(ValueError, match="model.cross_head"):
        head_input_size("mean", 8)
