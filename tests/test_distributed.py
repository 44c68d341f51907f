"""retrerank.distributed without a process group: one rank, every gather its input, and losses that
take their rank and world size as arguments (the 2-process checks live beside each user)."""

import torch

from retrerank.distributed import (
    gather_batch,
    gather_detached,
    gather_extra,
    gather_inputs,
    gather_relevant,
    gather_rows,
    gather_with_grad,
    local,
    shard,
    world,
)
from retrerank.objectives.contrastive import InfoNCE


def test_one_process_is_rank_zero_of_one_and_owns_every_item():
    assert world() == (0, 1)
    with local():
        assert world() == (0, 1)
    assert shard(7) == slice(0, 7)


def test_gathers_over_one_rank_return_their_input():
    x, index = torch.randn(3, 4, requires_grad=True), torch.tensor([0, 0, 1])
    relevant = torch.tensor([[0, -1], [0, 1], [1, -1]])
    assert gather_rows(x) is x and gather_with_grad(x, 0, 1) is x and gather_relevant(relevant, 1) is relevant
    assert torch.equal(gather_detached(x, 1), x) and not gather_detached(x, 1).requires_grad
    assert gather_batch(x, x, index, relevant, 0, 1) == (x, x, index, 0, relevant)
    assert gather_extra(x, index, 0, 1) == (x, index)
    batch = {"ids": torch.ones(3, 5, dtype=torch.long)}
    assert gather_inputs(batch, 1) is batch


def test_a_loss_given_one_rank_needs_no_process_group():
    text, image = (torch.nn.functional.normalize(torch.randn(4, 6), dim=-1) for _ in range(2))
    index = torch.arange(4)
    loss = InfoNCE(0.1)
    assert torch.equal(loss(text, image, index, rank=0, world_size=1), loss(text, image, index))
