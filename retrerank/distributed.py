"""Everything that crosses data-parallel ranks: who this process is, its share of the work, the gathers.

Two kinds of caller:

- evaluation (retrerank.retrieval.pipeline) and the training sampler ask `world()`: torch.distributed's
  (rank, size) when it is initialised, (0, 1) otherwise or inside `local()`. Each rank encodes,
  searches and reranks one contiguous block of the items (`shard`) and the blocks are all-gathered
  in rank order (`gather_rows`), so every rank ends with the single-process result.
- the losses take rank and world size as arguments (open_clip's ClipLoss does so too), so they run
  and test without global state; the system passes them `world()`. With world_size 1 every gather
  below returns its input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from retrerank.types import Inputs

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


# ---- evaluation: shards of the work, gathered back (ranks may hold different row counts) ----------
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


# ---- losses: equal row counts per rank, rank and world size passed in ------------------------------
class _GatherWithGrad(torch.autograd.Function):
    """All ranks' rows in rank order; backward sums every rank's gradient for the gathered rows
    (all-reduce) and keeps this rank's: each rank's loss reaches every rank's encoder.
    torch.distributed.nn's all_gather (deprecated) emulates that with all-to-all on gloo, which
    aborted 2-process CPU runs now and then; all-reduce is what every backend has."""

    @staticmethod
    def forward(ctx, tensor: Tensor, rank: int, world_size: int) -> Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = len(tensor), rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None


def gather_with_grad(tensor: Tensor, rank: int, world_size: int) -> Tensor:
    """Every rank's rows of `tensor` (equal row counts), differentiable (see _GatherWithGrad)."""
    if world_size == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, rank, world_size)


def gather_detached(tensor: Tensor, world_size: int) -> Tensor:
    """Every rank's rows (equal counts) in rank order, without gradient."""
    if world_size == 1:
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts)


def gather_relevant(relevant: Tensor | None, world_size: int) -> Tensor | None:
    """Every rank's `relevant` rows (retrerank.objectives.relevance) in rank order, padded with -1
    to the widest (no gradient)."""
    if relevant is None or world_size == 1:
        return relevant
    widths = [torch.zeros((), dtype=torch.long, device=relevant.device) for _ in range(world_size)]
    dist.all_gather(widths, torch.tensor(relevant.shape[1], device=relevant.device))
    padded = F.pad(relevant, [0, int(max(widths)) - relevant.shape[1]], value=-1).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)


def gather_batch(
    text: Tensor, image: Tensor, image_index: Tensor, relevant: Tensor | None, rank: int, world_size: int
) -> tuple[Tensor, Tensor, Tensor, int, Tensor | None]:
    """(all texts, all images, all image indices, this rank's first row, all relevant rows or None)
    over the ranks, embeddings with gradient; the local tensors themselves when world_size is 1."""
    if world_size == 1:
        return text, image, image_index, 0, relevant
    sizes = [torch.zeros((), dtype=torch.long, device=text.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor(len(text), device=text.device))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"contrastive loss across ranks needs equal local batch sizes, got {[int(s) for s in sizes]} "
            "(training loaders drop the last partial batch)"
        )
    indices = [torch.empty_like(image_index) for _ in sizes]
    dist.all_gather(indices, image_index)
    return (
        gather_with_grad(text, rank, world_size),
        gather_with_grad(image, rank, world_size),
        torch.cat(indices),
        rank * len(text),
        gather_relevant(relevant, world_size),
    )


def gather_extra(embeddings: Tensor, image_index: Tensor, rank: int, world_size: int) -> tuple[Tensor, Tensor]:
    """Every rank's extra negatives (with gradient) and their image rows; equal counts per rank
    (equal batch sizes, checked by `gather_batch`, times the same draws per item)."""
    if world_size == 1:
        return embeddings, image_index
    indices = [torch.empty_like(image_index) for _ in range(world_size)]
    dist.all_gather(indices, image_index)
    return gather_with_grad(embeddings, rank, world_size), torch.cat(indices)


def gather_inputs(batch: Inputs, world_size: int) -> Inputs:
    """Every rank's rows of a text or image batch in rank order, dim 1 (tokens, regions) padded
    with zeros / False to the longest."""
    if world_size == 1:
        return batch
    out = {}
    for key, value in batch.items():
        lengths = gather_detached(torch.tensor([value.shape[1]], device=value.device), world_size)
        padded = F.pad(value, [0, 0] * (value.dim() - 2) + [0, int(lengths.max()) - value.shape[1]])
        # bool as uint8: not every backend gathers bool
        gathered = gather_detached(padded.to(torch.uint8) if value.dtype == torch.bool else padded, world_size)
        out[key] = gathered.bool() if value.dtype == torch.bool else gathered
    return out
