"""objective.distill_weight: the cross-encoder teaches the bi-encoder (retrerank/objectives/distill.py)."""

import math

import pytest
import torch

from retrerank.objectives.distill import distill_loss
from tests.systems.test_joint import make_batch, make_system


def test_distill_loss_against_a_hand_computed_case():
    # one row, two candidates: teacher softmax (e^2, e^0)/(e^2 + 1), student uniform
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0]], requires_grad=True)
    p = math.exp(2) / (math.exp(2) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    loss = distill_loss(student, teacher)
    assert loss.item() == pytest.approx(kl, rel=1e-6)
    loss.backward()
    # d KL / d student = softmax(student) - softmax(teacher); the teacher gets no gradient
    assert torch.allclose(student.grad, torch.tensor([[0.5 - p, p - 0.5]]), atol=1e-6)
    assert teacher.grad is None
    # temperature 2: T^2 x KL of the softened distributions
    q = math.exp(1) / (math.exp(1) + 1)
    soft = q * math.log(q / 0.5) + (1 - q) * math.log((1 - q) / 0.5)
    assert distill_loss(student.detach(), teacher.detach(), 2.0).item() == pytest.approx(4 * soft, rel=1e-6)
    # equal distributions: nothing to learn, whatever the logits' offset
    assert distill_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[5.0, 7.0]])).item() == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="must both be"):
        distill_loss(torch.zeros(2, 3), torch.zeros(2, 2))


def test_the_system_adds_it_with_its_weight_and_it_trains_the_bi_encoder_only(tiny_bert_dir):
    system = make_system(tiny_bert_dir, hard_negatives=2, cross_loss="listwise", distill_weight=0.5)
    batch = make_batch(system)
    system.eval()  # no dropout: the two calls below see the same pairs and logits
    torch.manual_seed(3)
    losses = system.losses(batch, ["bi", "cross"])
    assert losses["loss"].item() == pytest.approx(
        losses["loss_bi"].item() + losses["loss_cross"].item() + 0.5 * losses["loss_distill"].item(), rel=1e-5
    )
    assert losses["loss_distill"].item() > 0
    # what it reads: the same pairs as the listwise loss, teacher = their cross logits in its layout,
    # student = the bi-encoder's scale x cosine of each pair
    import retrerank.objectives.cross_objective as cross_objective

    seen, args = [], []
    original, original_loss = system.cross_encoder.score, cross_objective.distill_loss
    system.cross_encoder.score = lambda t, i: seen.append(original(t, i)) or seen[-1]
    cross_objective.distill_loss = lambda s, t, temperature: args.append((s, t)) or original_loss(s, t, temperature)
    try:
        torch.manual_seed(3)
        losses = system.losses(batch, ["bi", "cross"])
    finally:
        system.cross_encoder.score, cross_objective.distill_loss = original, original_loss
    scores = seen[0].detach()
    teachers = [
        torch.cat([scores[:4, None], scores[4:12].view(4, 2)], 1),
        torch.cat([scores[:4, None], scores[12:].view(4, 2)], 1),
    ]
    assert all(torch.allclose(t, expected) for (_, t), expected in zip(args, teachers))
    with torch.no_grad():
        cosine = (system.bi_encoder.embed_texts(batch["text"]) * system.bi_encoder.embed_images(batch["image"])).sum(-1)
    assert all(torch.allclose(s[:, 0], system.contrastive.scale * cosine, atol=1e-5) for s, _ in args)
    assert losses["loss_distill"].item() == pytest.approx(
        sum(original_loss(s, t).item() for s, t in args) / 2, rel=1e-6
    )
    # distillation trains the bi-encoder (and its scale), never the cross-encoder's head
    system.zero_grad()
    losses["loss_distill"].backward()
    head = system.cross_encoder.head[1].weight
    assert head.grad is None or head.grad.abs().sum() == 0
    assert system.contrastive.log_scale.grad is not None and system.contrastive.log_scale.grad.abs() > 0


def test_off_by_default_and_absent_from_steps_without_the_bi_objective(tiny_bert_dir):
    system = make_system(tiny_bert_dir)
    assert "loss_distill" not in system.losses(make_batch(system), ["bi", "cross"])
    system = make_system(tiny_bert_dir, distill_weight=1.0)
    assert "loss_distill" not in system.losses(make_batch(system), ["cross"])
