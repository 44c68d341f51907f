"""The cross-encoder's scoring head: joint pair states -> one matching logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrerank.encoders.pooling import pool

CROSS_HEADS = ("halves", "attend", "mixed", "pair", "align")


def score_head(size: int, hidden: int = 0, dropout: float = 0.1) -> nn.Sequential:
    """dropout -> Linear(size, hidden) -> tanh -> dropout -> Linear(hidden, 1); hidden 0: size."""
    hidden = hidden or size
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(size, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1)
    )


def head_input_size(kind: str, size: int) -> int:
    if kind not in CROSS_HEADS:
        raise ValueError(f"model.cross_head={kind!r}; choose from {list(CROSS_HEADS)}")
    return {"pair": size, "mixed": 7 * size}.get(kind, 4 * size)  # align: attend's features


def pair_features(kind: str, hidden: torch.Tensor, mask: torch.Tensor, text_len: int, pooling: str) -> torch.Tensor:
    """What the head reads from the joint output [B, T + I, H] of a pair whose first `text_len`
    positions are the text.

    pair: one vector pooled over the whole pair. halves: [u, v, u * v, |u - v|], u the text half
    pooled by `pooling`, v the mean of the image half, both L2-normalised. attend: the same, with
    v the image half pooled by attention from the pooled text (`attend`). mixed: [u, and for v the
    mean and then the attention pool: v, u * v, |u - v|], 7 x the width. One mean over the pair
    blends words and regions; the halves keep what the caption says and what the image shows
    apart, so the head reads their agreement directly (as sentence-pair classifiers such as
    InferSent and SBERT do), while every layer below still attends across the pair.
    """
    if kind == "pair":
        return pool(hidden, mask, pooling)
    text = pool(hidden[:, :text_len], mask[:, :text_len], pooling)
    regions, region_mask = hidden[:, text_len:], mask[:, text_len:]
    u = F.normalize(text, dim=-1)
    views = {"halves": ("mean",), "attend": ("attend",), "align": ("attend",), "mixed": ("mean", "attend")}[kind]
    parts = [u]
    for view in views:
        v = attend(text, regions, region_mask) if view == "attend" else pool(regions, region_mask, "mean")
        v = F.normalize(v, dim=-1)
        parts += [v, u * v, (u - v).abs()]
    return torch.cat(parts, dim=-1)


def attend(query: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image half pooled by scaled dot-product attention from the pooled text [B, H]: the
    regions the caption is about weigh most. The halves head's mean gives every region (a
    scene's other objects, background) the same weight, as a query-blind pooled vector must; a
    cross-encoder knows the caption and need not."""
    scores = (states @ query.unsqueeze(-1)).squeeze(-1) / states.shape[-1] ** 0.5  # [B, I]
    scores = scores.masked_fill(~mask.bool(), torch.finfo(scores.dtype).min)
    return (scores.softmax(-1).unsqueeze(-1) * states).sum(1)


class TokenAlignment(nn.Module):
    """The align head's second term: does every word of the caption find its region?

    A pooled caption vector hardly changes when two objects swap colours ("a green circle and a
    purple star" against "a purple circle and a green star"), so a head that reads one text vector
    and one image vector misses a binding error that a single word exposes. Here each text position
    t of the joint output is matched to its best region, best_t = max_r cos(P h_t, Q h_r) (learned
    projections P, Q), and a learned gate weighs the words (g = softmax over the text of w . h_t:
    the content words, not "a" or [SEP]). A caption is true only if all its parts hold, so beside
    the weighted mean of best_t the term reads their weighted soft minimum,
    -tau log sum_t g_t exp(-best_t / tau), which the worst-matched word dominates. Returns the
    logit's share: a learned linear map of (mean, soft minimum) [B]."""

    def __init__(self, size: int, tau: float = 0.1, scale: float = 5.0) -> None:
        super().__init__()
        self.text_proj = nn.Linear(size, size)
        self.region_proj = nn.Linear(size, size)
        self.gate = nn.Linear(size, 1)
        self.out = nn.Linear(2, 1)
        self.tau = tau
        with torch.no_grad():  # the cosines move in [-1, 1]; start them at the logit scale of the head
            self.out.weight.fill_(scale)
            self.out.bias.zero_()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, text_len: int) -> torch.Tensor:
        mask = mask.bool()
        text, text_mask = hidden[:, :text_len], mask[:, :text_len]
        regions, region_mask = hidden[:, text_len:], mask[:, text_len:]
        words = F.normalize(self.text_proj(text), dim=-1)
        parts = F.normalize(self.region_proj(regions), dim=-1)
        sim = words @ parts.transpose(1, 2)  # [B, T, I]
        sim = sim.masked_fill(~region_mask[:, None, :], -1.0)  # a cosine is never below -1
        best = sim.max(-1).values  # [B, T]
        gate = self.gate(text).squeeze(-1)  # under autocast its own dtype (bf16), not the states'
        log_gate = gate.masked_fill(~text_mask, torch.finfo(gate.dtype).min).log_softmax(-1)
        mean = (log_gate.exp() * best).sum(-1)
        softmin = -self.tau * torch.logsumexp(log_gate - best / self.tau, dim=-1)
        return self.out(torch.stack([mean, softmin], -1)).squeeze(-1)
