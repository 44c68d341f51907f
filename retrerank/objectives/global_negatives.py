"""Matching-loss negatives drawn from the global batch: every data-parallel rank's items.

Input contract: this rank's `text` and `image` input batches (token ids + mask; region features,
boxes + mask), `image_index` [B], and their detached bi-encoder embeddings `text_emb`,
`image_emb` [B, E]; every rank has the same B. Each rank scores its own rows: for each of its
texts it draws images among all G images of the global batch, for each of its images texts
among all G texts, with probability softmax(scale * cosine) over the cells of other images (the
in-batch rule of objectives.matching over a larger batch; scale 0: uniform, i.e. random
negatives). The negatives' inputs may live on another rank: every rank's inputs are all-gathered,
padded to a common length (padding is masked, so scores do not change).

Draws are inverse-CDF samples, without replacement while a row has negatives left, from one
uniform number per (global row, draw) taken from torch's generator for the whole global batch:
a row's draw does not depend on how rows are split over ranks, so with the same generator
state (seed_everything gives every rank the same) 2 ranks choose exactly what one process
chooses over the global batch (tested). `rank` and `world_size` are passed in (retrerank.distributed);
with world_size 1 the global batch is the batch.
Cost per step: one all-gather of the embeddings and one of the inputs (region features too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrerank.distributed import gather_detached, gather_inputs, gather_relevant
from retrerank.objectives.relevance import true_of
from retrerank.types import Inputs


def draw(logits: torch.Tensor, allowed: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Columns [R, n] drawn per row from softmax(logits) over the `allowed` cells, one uniform
    number in [0, 1) per draw (`noise` [R, n]), without replacement while a row has allowed cells left (then again
    from all of them). A row with no allowed cell draws from all columns (the caller drops it)."""
    has_any = allowed.any(1, keepdim=True)
    probs = F.softmax(logits.float().masked_fill(~allowed, float("-inf")).masked_fill(~has_any, 0.0), dim=1)
    left, picks = probs, []
    for s in range(noise.shape[1]):
        left = torch.where(left.sum(1, keepdim=True) > 0, left, probs)
        cdf = left.cumsum(1)
        pick = torch.searchsorted(cdf, (noise[:, s : s + 1] * cdf[:, -1:]).contiguous(), right=True)
        last = (left > 0).long().cumsum(1).argmax(1, keepdim=True)  # rounding can run past the end
        pick = torch.minimum(pick, last)
        left = left.scatter(1, pick, 0.0)
        picks.append(pick)
    return torch.cat(picks, 1)


def draw_global(
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    image_index: torch.Tensor,
    scale: float | torch.Tensor,
    hard: int,
    uniform: int,
    generator: torch.Generator | None = None,
    relevant: torch.Tensor | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(global image rows per local text [B, hard + uniform], global text rows per local image
    [B, hard + uniform], valid [B]: rows with a negative in both directions, this rank's global
    rows [B]). True matches (retrerank.objectives.relevance; `relevant` for exact relevance) are
    never drawn."""
    all_text, all_image = gather_detached(text_emb, world_size), gather_detached(image_emb, world_size)
    all_index, all_relevant = gather_detached(image_index, world_size), gather_relevant(relevant, world_size)
    rows = rank * len(image_index) + torch.arange(len(image_index), device=image_index.device)
    allowed = {
        "t2i": ~true_of(relevant, image_index, all_index),  # this rank's texts x all images
        "i2t": ~true_of(all_relevant, all_index, image_index).T,
    }  # this rank's images x all texts
    logits = {"t2i": scale * text_emb.detach() @ all_image.T, "i2t": scale * image_emb.detach() @ all_text.T}
    picks = {"t2i": [], "i2t": []}
    for num, sharp in ((hard, True), (uniform, False)):
        if num == 0:
            continue
        for direction in ("t2i", "i2t"):
            # drawn for the whole global batch on every rank; each keeps its rows
            noise = torch.rand(len(all_index), num, generator=generator).to(rows.device)[rows]
            cells = logits[direction] if sharp else torch.zeros_like(logits[direction])
            picks[direction].append(draw(cells, allowed[direction], noise))
    valid = allowed["t2i"].any(1) & allowed["i2t"].any(1)
    return torch.cat(picks["t2i"], 1), torch.cat(picks["i2t"], 1), valid, rows


def global_negative_pairs(
    text: Inputs,
    image: Inputs,
    image_index: torch.Tensor,
    text_emb: torch.Tensor,
    image_emb: torch.Tensor,
    scale: float | torch.Tensor,
    hard: int,
    uniform: int,
    generator: torch.Generator | None = None,
    relevant: torch.Tensor | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[list[tuple[Inputs, Inputs]], torch.Tensor]:
    """The negative pairs' inputs: [(this rank's texts, their drawn images), (drawn texts, this
    rank's images)], item-major, rows with no negative left out; and valid [B], the rows kept."""
    t2i, i2t, valid, rows = draw_global(
        text_emb, image_emb, image_index, scale, hard, uniform, generator, relevant, rank=rank, world_size=world_size
    )
    all_text, all_image = gather_inputs(text, world_size), gather_inputs(image, world_size)
    num = t2i.shape[1]
    own = rows[valid].repeat_interleave(num)
    take = lambda batch, r: {key: value[r] for key, value in batch.items()}  # noqa: E731
    return [
        (take(all_text, own), take(all_image, t2i[valid].reshape(-1))),
        (take(all_text, i2t[valid].reshape(-1)), take(all_image, own)),
    ], valid
