"""Split retrieval work across data-parallel ranks and put the pieces back together.

When torch.distributed is initialised with several ranks (a DDP run evaluates on every rank),
each rank encodes, searches and reranks one contiguous block of the items, and the blocks are
all-gathered in rank order, so every rank ends with the single-process result and no rank
does the whole job. Without torch.distributed these are no-ops.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

_local = [False]  # inside `local()`: this process works alone


def world() -> tuple[int, int]:
    """(rank, number of ranks); (0, 1) when not distributed or inside `local()`."""
    if dist.is_available() and dist.is_initialized() and not _local[0]:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def local() -> Iterator[None]:
    """Work alone inside the block (no collectives): for code that runs on one rank only, such
    as the rank-0 sweeps, where the other ranks would never join a gather."""
    previous, _local[0] = _local[0], True
    try:
        yield
    finally:
        _local[0] = previous


def shard(n: int) -> slice:
    """This rank's contiguous block of n items (blocks differ in size by at most one)."""
    rank, size = world()
    return slice(n * rank // size, n * (rank + 1) // size)


def gather_rows(tensor: Tensor) -> Tensor:
    """Every rank's block, concatenated in rank order along dim 0, on this tensor's device."""
    if world()[1] == 1:
        return tensor
    blocks: list = [None] * world()[1]
    dist.all_gather_object(blocks, tensor.detach().cpu())  # any shapes and dtypes, any backend
    filled = [block for block in blocks if block.numel()] or blocks[:1]  # a rank can have no items
    return torch.cat(filled).to(tensor.device)
