"""Gradient caching (GradCache, Gao et al. 2021): contrastive batches larger than memory allows.

With `objective.grad_cache_chunk` = c > 0 an encoder runs over the batch in chunks of c rows,
each under non-reentrant activation checkpointing. That is GradCache's two passes, run by autograd:

1. forward: every chunk is encoded without keeping its activations (only its inputs and its
   embeddings are kept), so the loss sees the embeddings of the whole batch: all in-batch
   negatives, and under DDP the all-gathered ones;
2. backward: the loss's backward first yields its gradient w.r.t. those embeddings (GradCache's
   cached gradients), then each chunk is encoded again, with graph, and that gradient is
   backpropagated into the weights, one chunk at a time (autograd runs the later chunk's nodes
   first, so chunks do not interleave).

Each chunk's RNG state is saved in the first pass and replayed in the second
(`preserve_rng_state`), so dropout draws the same masks in both. Peak activation memory is that
of one chunk plus the [B, E] embeddings and the loss over them, not that of the batch; the price
is a second forward pass. The gradients equal those of the plain batch (tested). The optimiser
step, gradient clipping, mixed precision and DDP stay Lightning's automatic ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from retrerank.types import Inputs


def chunked(encode: Callable[..., torch.Tensor], inputs: tuple[Inputs, ...], chunk: int) -> torch.Tensor:
    """encode(*inputs), computed `chunk` rows at a time when building a graph (see the module doc);
    a plain call when chunk is 0, the batch fits in one chunk, or there is no graph to build."""
    rows = len(next(iter(inputs[0].values())))
    if chunk <= 0 or rows <= chunk or not torch.is_grad_enabled():
        return encode(*inputs)
    parts = []
    for start in range(0, rows, chunk):
        part = tuple({key: value[start : start + chunk] for key, value in batch.items()} for batch in inputs)
        parts.append(checkpoint(encode, *part, use_reentrant=False, preserve_rng_state=True))
    return torch.cat(parts)
