"""Resumable training order: an interrupted run goes on with the very batches it would have seen.

The order of an epoch is a function of (seed, epoch) only, never of torch's global generator,
so it can be rebuilt in a new process. The loader counts the batches it has handed out; Lightning
saves its `state_dict()` in every checkpoint and, on resume, calls `load_state_dict()` before it
iterates (it does so for any train loader with both methods), and the sampler then skips the
batches already trained on. Skipping happens on indices: no skipped item is loaded.

Under DDP each rank takes every world-th index of the same global order (DistributedSampler's
sharding; being one, Lightning does not wrap it in another).

Near-duplicate batches (`pairs`): the items of two near-duplicate images are paired up anew each
epoch, and each pair sits side by side in the order (on one rank under DDP), so that both fall in
one batch (except where a batch boundary splits one) and each is the other's hard negative.
With `pairs_from_epoch` = e, epochs before e are plain permutations (a curriculum: near-duplicates
only once the model has learned the easier distinctions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """A random permutation of the dataset per epoch, or with `weights`, `len(dataset)` draws with
    replacement in proportion to them; seeded by seed + epoch (Lightning calls `set_epoch`)."""

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        rank: int = 0,
        world: int = 1,
        weights: torch.Tensor | None = None,
        pairs: Sequence[tuple[list[int], list[int]]] = (),
        pairs_from_epoch: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if weights is not None and pairs:
            raise ValueError("ResumableSampler: weighted draws and near-duplicate pairs do not combine")
        self.weights = weights
        self.pairs = [(list(a), list(b)) for a, b in pairs]  # (items of an image, items of its near-duplicate)
        self.pairs_from_epoch = pairs_from_epoch
        # set by `resume`: skip this rank's first `start` indices of epoch `start_epoch`, in every pass
        # over it (Lightning may iterate a resumed epoch twice, and worker processes draw early)
        self.start_epoch, self.start = 0, 0
        self.epoch_listeners: list[Callable[[int], None]] = []  # told each epoch before its indices are drawn

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for listener in self.epoch_listeners:
            listener(epoch)

    def order(self) -> list[int]:
        """This epoch's global order, padded to a multiple of the ranks like DistributedSampler's."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        if self.pairs and self.epoch >= self.pairs_from_epoch:
            return self._paired_order(generator)
        if self.weights is None:
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        padding = self.total_size - n
        return order + (order * math.ceil(padding / n))[:padding] if padding else order

    def _paired_order(self, generator: torch.Generator) -> list[int]:
        """A random order of units: one item of an image beside one of its near-duplicate's (paired at
        random), the rest alone; units go whole to the rank with the fewest items so far."""

        def shuffled(items: list[int]) -> list[int]:
            return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

        units, paired = [], set()
        for a, b in self.pairs:
            a, b = shuffled(a), shuffled(b)
            units += [[x, y] for x, y in zip(a, b)] + [[x] for x in a[len(b) :] + b[len(a) :]]
            paired.update(a + b)
        units += [[i] for i in range(len(self.dataset)) if i not in paired]
        ranks: list[list[int]] = [[] for _ in range(self.num_replicas)]
        for u in torch.randperm(len(units), generator=generator).tolist():
            min(ranks, key=len).extend(units[u])
        per_rank = self.total_size // self.num_replicas
        ranks = [(r * math.ceil(per_rank / max(len(r), 1)))[:per_rank] for r in ranks]  # pad by wrapping
        return [ranks[r][i] for i in range(per_rank) for r in range(self.num_replicas)]

    def skipped(self) -> int:
        return self.start if self.epoch == self.start_epoch else 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.rank : self.total_size : self.num_replicas][self.skipped() :])

    def resume(self, epoch: int, consumed: int) -> None:
        """Continue epoch `epoch` after its first `consumed` indices of this rank."""
        self.set_epoch(epoch)  # now, not only later: worker processes draw indices as soon as iteration starts
        self.start_epoch, self.start = epoch, consumed


class ResumableLoader(DataLoader):
    """A DataLoader over a ResumableSampler that counts the batches it has yielded this epoch."""

    def __iter__(self) -> Iterator:
        # eager, not a generator: the base iterator must be created when Lightning asks for it
        # (it draws a seed from the global generator then), not at the first batch
        return _Counting(self, super().__iter__(), done=self.sampler.skipped() // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": getattr(self, "_batches_done", 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = state["epoch"], state["batches"]
        if done >= len(self):  # saved at the epoch's end: the next one starts whole
            epoch, done = epoch + 1, 0
        self.sampler.resume(epoch, done * self.batch_size)


class _Counting:
    def __init__(self, loader: ResumableLoader, iterator: Iterator, done: int) -> None:
        self.loader, self.iterator = loader, iterator
        loader._batches_done = done

    def __iter__(self) -> _Counting:
        return self

    def __next__(self):
        batch = next(self.iterator)
        self.loader._batches_done += 1
        return batch
