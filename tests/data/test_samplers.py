"""Resumable training order: a function of (seed, epoch), sharded over ranks, and a loader that
picks up after the batches it had already handed out."""

import torch

from retrerank.data.samplers import ResumableLoader, ResumableSampler

N, BATCH = 23, 4


def loader(seed: int = 0, weights=None, rank: int = 0, world: int = 1) -> ResumableLoader:
    data = list(range(N))
    return ResumableLoader(
        data, batch_size=BATCH, drop_last=True, sampler=ResumableSampler(data, seed, rank, world, weights=weights)
    )


def batches(dl, epoch: int = 0, take: int | None = None) -> list[list[int]]:
    dl.sampler.set_epoch(epoch)
    out = []
    for batch in dl:
        out.append(batch.tolist())
        if take is not None and len(out) == take:
            break
    return out


def test_order_depends_on_seed_and_epoch_not_on_the_global_generator():
    torch.manual_seed(1)
    first = batches(loader())
    torch.manual_seed(2)
    assert batches(loader()) == first
    assert batches(loader(), epoch=1) != first and batches(loader(seed=1)) != first
    assert len(first) == N // BATCH and len({i for b in first for i in b}) == N // BATCH * BATCH  # a permutation


def test_ranks_split_one_global_order():
    whole = ResumableSampler(list(range(N)), seed=0).order()
    shards = [list(ResumableSampler(list(range(N)), 0, rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12  # 23 padded to 24
    assert sorted(shards[0] + shards[1]) == sorted(whole + whole[:1])


def test_a_resumed_loader_yields_the_rest_of_the_epoch_and_keeps_counting():
    for weights in (None, torch.rand(N, dtype=torch.double)):  # plain shuffle and balanced languages
        full = batches(loader(weights=weights), epoch=2)
        first = loader(weights=weights)
        assert batches(first, epoch=2, take=2) == full[:2]
        assert first.state_dict() == {"epoch": 2, "batches": 2}

        second = loader(weights=weights)
        second.load_state_dict(first.state_dict())  # a new process: Lightning loads before iterating
        assert batches(second, epoch=2, take=1) == full[2:3]
        assert second.state_dict() == {"epoch": 2, "batches": 3}  # counts the whole epoch: resumable again

        third = loader(weights=weights)
        third.load_state_dict(second.state_dict())
        assert batches(third, epoch=2) == full[3:]
        assert batches(third, epoch=3) == batches(loader(weights=weights), epoch=3)  # the next epoch is whole


def test_a_state_saved_at_the_end_of_an_epoch_resumes_at_the_next():
    dl = loader()
    dl.load_state_dict({"epoch": 0, "batches": N // BATCH})  # all full batches (the rest is dropped)
    assert dl.sampler.epoch == 1 and batches(dl, epoch=1) == batches(loader(), epoch=1)


def paired_sampler(rank: int = 0, world: int = 1, epoch: int = 0) -> ResumableSampler:
    # items 0-4 are one image's, 5-7 its near-duplicate's; 8-9 and 10-11 another pair; the rest alone
    sampler = ResumableSampler(list(range(N)), 0, rank, world, pairs=[([0, 1, 2, 3, 4], [5, 6, 7]), ([8, 9], [10, 11])])
    sampler.set_epoch(epoch)
    return sampler


def partner_counts(order: list[int]) -> int:
    """How many items of the first pair's images sit right beside an item of the other image."""
    a, b = {0, 1, 2, 3, 4}, {5, 6, 7}
    return sum(1 for x, y in zip(order, order[1:]) if (x in a and y in b) or (x in b and y in a))


def test_near_duplicate_items_sit_side_by_side_in_every_epoch():
    for epoch in range(3):
        order = paired_sampler(epoch=epoch).order()
        assert sorted(order) == list(range(N))  # still every item once per epoch
        assert partner_counts(order) >= 3  # the 3 items of the smaller image each beside a partner
        pos = {item: p for p, item in enumerate(order)}
        assert {abs(pos[x] - pos[y]) for x in (8, 9) for y in (10, 11)} >= {1}
    first, second = paired_sampler().order(), paired_sampler(epoch=1).order()
    assert first == paired_sampler().order() and first != second  # a function of (seed, epoch)


def test_near_duplicate_pairs_stay_on_one_rank():
    shards = [list(paired_sampler(rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12
    for a, b in (({0, 1, 2, 3, 4}, {5, 6, 7}), ({8, 9}, {10, 11})):
        for shard in shards:  # an item beside its partner in the rank's own order
            assert sum(1 for x, y in zip(shard, shard[1:]) if {x, y} & a and {x, y} & b) >= min(
                len(set(shard) & a), len(set(shard) & b)
            )


def test_weights_and_pairs_do_not_combine():
    import pytest

    with pytest.raises(ValueError, match="do not combine"):
        ResumableSampler(list(range(N)), 0, weights=torch.ones(N), pairs=[([0], [1])])


def test_near_duplicate_pairs_from_a_later_epoch_leave_the_earlier_epochs_plain():
    """pairs_from_epoch=2 (data.near_duplicate_from_epoch): epochs 0-1 are the unpaired sampler's
    permutations, epochs 2 on the paired sampler's orders."""
    pairs = [([0, 1, 2, 3, 4], [5, 6, 7]), ([8, 9], [10, 11])]
    late, plain = (
        ResumableSampler(list(range(N)), 0, pairs=pairs, pairs_from_epoch=2),
        ResumableSampler(list(range(N)), 0),
    )
    for epoch in range(4):
        late.set_epoch(epoch)
        plain.set_epoch(epoch)
        expected = plain.order() if epoch < 2 else paired_sampler(epoch=epoch).order()
        assert late.order() == expected
    assert partner_counts(late.order()) >= 3
