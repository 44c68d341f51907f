"""Resumable training order: a function of (seed, epoch), sharded over ranks, and a loader that
picks up after the batches it had already handed out."""
import torch

from retrerank.data.samplers import ResumableLoader, ResumableSampler

N, BATCH = 23, 4


def loader(seed: int = 0, weights=None, rank: int = 0, world: int = 1) -> ResumableLoader:
    data = list(range(N))
    return ResumableLoader(data, batch_size=BATCH, drop_last=True,
                           sampler=ResumableSampler(data, seed, rank, world, weights=weights))


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
