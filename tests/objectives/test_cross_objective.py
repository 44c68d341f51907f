"""The cross-encoder's objective (retrerank/objectives/cross_objective.py) on hand-worked inputs: which
pairs a batch gives, how the listwise and pointwise losses group their logits, the residual score and
distillation. A lookup table stands in for the cross-encoder, so every logit is known."""

import math

import pytest
import torch

from retrerank.config import MiningConfig, ObjectiveConfig
from retrerank.objectives.cross_objective import CrossObjective, select_foils

# ids: texts t0 t1, mined captions n0 n1, foils f0 f1 (row 0) f2 f3 (row 1); images i0 i1, mined m0 m1
T0, T1, N0, N1, F0, F1, F2, F3 = range(8)
I0, I1, M0, M1 = range(4)
LN2, LN3, LN5, BIG = math.log(2), math.log(3), math.log(5), math.log(100)
# every pair not listed (the positives among them) scores 0
TABLE = {(T0, I1): LN2, (F0, I0): LN3, (N1, I1): LN5, (F1, I0): BIG, (F3, I1): BIG}


def ids(*values):
    return {"id": torch.tensor(values)}


def table_score(blocks):
    """The stand-in cross-encoder: TABLE's logit of every pair of the blocks, in order."""
    pairs = [
        (int(t), int(i))
        for texts, text_rows, images, image_rows in blocks
        for t, i in zip(texts["id"][text_rows], images["id"][image_rows])
    ]
    return torch.tensor([TABLE.get(pair, 0.0) for pair in pairs])


def make_batch(image_index=(0, 1), foils=True, mined=False):
    batch = {"text": ids(T0, T1), "image": ids(I0, I1), "image_index": torch.tensor(image_index)}
    if foils:
        batch["foil_text"] = ids(F0, F1, F2, F3)  # two per row, item-major
    if mined:
        batch |= {
            "neg_image": ids(M0, M1),
            "neg_image_index": torch.tensor([[4], [5]]),
            "neg_text": ids(N0, N1),
            "neg_text_index": torch.tensor([[1], [0]]),
        }
    return batch


def embeddings_of(batch):
    """Orthonormal bi-encoder embeddings: each caption's cosine is 1 with its own image, 0 otherwise."""
    eye = torch.eye(2)
    return {id(batch["text"]): eye, id(batch["image"]): eye}


def pairs_of(objective, batch, embeddings=None, scale=1.0):
    embeddings = embeddings_of(batch) if embeddings is None else embeddings
    torch.manual_seed(0)
    return objective.pairs(batch, embeddings, table_score, torch.tensor(scale))


def pair_ids(pairs):
    return [
        (int(t), int(i))
        for texts, text_rows, images, image_rows in pairs.blocks
        for t, i in zip(texts["id"][text_rows], images["id"][image_rows])
    ]


def test_pairs_are_positives_then_sampled_mined_and_foil_negatives_in_that_order():
    # two rows, one negative each way: the sampler can only draw the other row's item
    objective = CrossObjective(
        ObjectiveConfig(hard_negatives=1, foil_negatives=1, mining=MiningConfig(enabled=True, matching="add"))
    )
    pairs = pairs_of(objective, make_batch(mined=True))
    assert pair_ids(pairs) == [
        (T0, I0), (T1, I1),  # positives
        (T0, I1), (T1, I0),  # sampled t2i: (caption r, negative image)
        (T1, I0), (T0, I1),  # sampled i2t: (negative caption, image r)
        (T0, M0), (T1, M1),  # mined t2i
        (N0, I0), (N1, I1),  # mined i2t
        (F0, I0), (F2, I1),  # each image's first foil, i2t
    ]  # fmt: skip
    assert torch.equal(pairs.scores, table_score(pairs.blocks))
    positive, t2i, i2t = pairs.groups(pairs.scores)
    assert torch.equal(positive, torch.zeros(2))
    assert torch.allclose(t2i, torch.tensor([[LN2, 0.0], [0.0, 0.0]]))
    assert torch.allclose(i2t, torch.tensor([[0.0, 0.0, LN3], [LN2, LN5, 0.0]]))


def test_listwise_loss_ranks_each_positive_against_its_own_rows_negatives():
    objective = CrossObjective(
        ObjectiveConfig(
            hard_negatives=1, foil_negatives=1, cross_loss="listwise", mining=MiningConfig(enabled=True, matching="add")
        )
    )
    loss = objective.loss(pairs_of(objective, make_batch(mined=True)))
    # positive logit 0 against exp-weights: t2i row 0 (2, 1), row 1 (1, 1); i2t row 0 (1, 1, 3), row 1 (2, 5, 1)
    t2i = (math.log(1 + 2 + 1) + math.log(1 + 1 + 1)) / 2
    i2t = (math.log(1 + 1 + 1 + 3) + math.log(1 + 2 + 5 + 1)) / 2
    assert loss.item() == pytest.approx((t2i + i2t) / 2, rel=1e-6)


def test_pointwise_loss_is_the_mean_bce_over_every_pair():
    objective = CrossObjective(ObjectiveConfig(hard_negatives=1, foil_negatives=1, cross_loss="bce"))
    loss = objective.loss(pairs_of(objective, make_batch()))
    # label 1: log(1 + e^-x) of the positives (x = 0); label 0: log(1 + e^x) of the 6 negatives
    # (t0, i1) twice (x = ln 2), (t1, i0) twice (0), (f0, i0) (ln 3), (f2, i1) (0)
    positives = 2 * math.log(2)
    negatives = 2 * math.log(3) + 2 * math.log(2) + math.log(4) + math.log(2)
    assert loss.item() == pytest.approx((positives + negatives) / 8, rel=1e-6)


def test_replace_drops_the_sampled_negatives_and_foils_follow_the_config():
    config = ObjectiveConfig(hard_negatives=1, foil_negatives=2, mining=MiningConfig(enabled=True, matching="replace"))
    objective = CrossObjective(config)
    batch = make_batch(mined=True)
    assert pair_ids(pairs_of(objective, batch)) == [
        (T0, I0), (T1, I1), (T0, M0), (T1, M1), (N0, I0), (N1, I1), (F0, I0), (F1, I0), (F2, I1), (F3, I1)
    ]  # fmt: skip
    config.foil_negatives = 0  # read from the config at each call: the batch's foils are ignored
    assert len(pair_ids(pairs_of(objective, batch))) == 6
    config.mining.matching = "none"  # the mined negatives are ignored, the sampled ones are back
    assert len(pair_ids(pairs_of(objective, batch))) == 6
    assert select_foils(batch, 5)[0] is batch["foil_text"] and select_foils(batch, 5)[1] == 2
    assert select_foils(make_batch(foils=False), 1) is None


def test_residual_adds_the_detached_bi_logit_and_needs_every_items_embedding():
    objective = CrossObjective(ObjectiveConfig(hard_negatives=1, foil_negatives=1, cross_residual=True))
    batch = make_batch()
    foils = objective.foils(batch)  # each image's first foil: f0, f2
    embeddings = embeddings_of(batch)
    embeddings[id(foils[0])] = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(2.0, requires_grad=True)
    torch.manual_seed(0)
    pairs = objective.pairs(batch, embeddings, table_score, scale, foils=foils)
    # cosines: positives 1, sampled negatives 0, foils (f0, i0) 1 and (f2, i1) 0.8
    cosine = torch.tensor([1.0, 1.0, 0, 0, 0, 0, 1.0, 0.8])
    assert torch.allclose(pairs.scores, table_score(pairs.blocks) + 2.0 * cosine)
    assert not pairs.scores.requires_grad  # the bi-encoder's part is a fixed offset here
    del embeddings[id(foils[0])]
    with pytest.raises(ValueError, match="cross_residual: no bi-encoder embeddings of some pairs' texts"):
        objective.pairs(batch, embeddings, table_score, scale, foils=foils)


def test_distillation_pulls_the_bi_logits_toward_the_cross_logits_per_direction():
    objective = CrossObjective(ObjectiveConfig(hard_negatives=1, distill_temperature=1.0))
    batch = make_batch(foils=False)
    pairs = pairs_of(objective, batch)
    live = {key: value.clone().requires_grad_() for key, value in embeddings_of(batch).items()}
    scale = torch.tensor(math.log(3), requires_grad=True)
    loss = objective.distill(pairs, live, scale)
    # student over (positive, negative): logits (ln 3, 0), softmax (3/4, 1/4) on every row and direction;
    # teacher: (0, ln 2) -> (1/3, 2/3) on one row of each direction, (0, 0) -> (1/2, 1/2) on the other
    kl = lambda p: p * math.log(p / 0.75) + (1 - p) * math.log((1 - p) / 0.25)  # noqa: E731
    assert loss.item() == pytest.approx((kl(1 / 3) + kl(1 / 2)) / 2, rel=1e-6)
    loss.backward()
    # d/ds: the student's positive probability minus the teacher's, averaged: (3/4 - 1/3 + 3/4 - 1/2) / 2
    assert scale.grad.item() == pytest.approx(1 / 3, rel=1e-6)  # > 0: the student is too sure of its positives
    assert all(value.grad is not None for value in live.values())


def test_a_batch_with_no_negatives_falls_back_to_bce_and_distils_nothing():
    objective = CrossObjective(ObjectiveConfig(hard_negatives=1, cross_loss="listwise"))
    batch = make_batch(image_index=(0, 0), foils=False)  # two captions of one image: no negative anywhere
    pairs = pairs_of(objective, batch)
    assert pair_ids(pairs) == [(T0, I0), (T1, I1)] and not pairs.keep.any()
    assert objective.loss(pairs).item() == pytest.approx(math.log(2), rel=1e-6)  # BCE of logit 0, label 1
    assert objective.distill(pairs, embeddings_of(batch), torch.tensor(1.0)).item() == 0
