"""The pipeline's pair-scoring part: cross-encoder logits for many (text, image) pairs, batched.

`PairScoring` is a mixin of `RetrieveRerank` (retrerank.retrieval.pipeline). Two paths:
- full pairs (`_score_pairs`): each batch's distinct texts are tokenized and images collated
  once, sent to the device once and repeated there;
- late interaction (`_score_states`): pairs of cached layer-m states, only blocks [m, L) per pair.
`score_all` scores every pair of a split (the cross_all method), sharded under data parallelism.
The cross-encoder runs through `_call` (Encoding's: compiled with eval.compile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from retrerank.data.records import ImageRecord
from retrerank.distributed import gather_rows, shard
from retrerank.retrieval.state_cache import StateCache
from retrerank.torch_utils import device_of, inference, to_device

T = TypeVar("T")


class PairScoring:
    """Cross-encoder scores of pairs (a part of RetrieveRerank; uses its Encoding part)."""

    cross_encoder: nn.Module | None
    rerank_batch_size: int
    scoring: str
    bi_weight: float
    progress: bool

    def score_all(self, texts: Sequence[str], images: Sequence[ImageRecord]) -> Tensor:
        """Reranking scores [n_texts, n_images] of every pair (on CPU): cross-encoder logits, plus
        bi_weight times the bi-encoder cosine with scoring="cross+bi" (the score reranking ranks by)."""
        self._require_cross()
        texts, images = list(texts), list(images)
        n_images = len(images)
        total = len(texts) * n_images
        if total == 0:
            raise ValueError("score_all needs at least one text and one image")
        mine = shard(total)  # under data parallelism: this rank's block of pairs
        rows = torch.arange(mine.start, mine.stop)
        if self._late():  # every text's and image's lower blocks once, then blocks [m, L) per pair
            text_states, image_states = self._cross_states(texts, "texts"), self._cross_states(images, "images")
            logits = self._score_states(
                text_states, (rows // n_images).tolist(), image_states, (rows % n_images).tolist(), "score all pairs"
            )
            scores = gather_rows(logits).view(len(texts), n_images)
        else:
            # image-major (pair p is text p % n_texts with image p // n_texts): an image is read and
            # collated once per batch of pairs, not once per text
            n_texts = len(texts)
            logits = self._score_pairs(
                lambda i: (texts[(mine.start + i) % n_texts], images[(mine.start + i) // n_texts]),
                len(rows),
                "score all pairs",
            )
            scores = gather_rows(logits).view(n_images, n_texts).T.contiguous()
        if self.scoring == "cross+bi":
            scores = scores + self.bi_weight * (self.embed_texts(texts) @ self.embed_images(images).T).cpu()
        return scores

    def _score_states(
        self, texts: StateCache, text_rows: list[int], images: StateCache, image_rows: list[int], desc: str = "rerank"
    ) -> Tensor:
        """Late-interaction logits for pairs (texts[text_rows[i]], images[image_rows[i]]) from cached states."""
        cross = self.cross_encoder
        dtype = next(cross.parameters()).dtype
        parts = []
        starts = range(0, len(text_rows), self.rerank_batch_size)
        with inference(cross):
            for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
                stop = min(start + self.rerank_batch_size, len(text_rows))
                logits = self._call(
                    cross,
                    "score_lower",
                    texts.gather(text_rows[start:stop], dtype),
                    images.gather(image_rows[start:stop], dtype),
                )
                parts.append(logits.reshape(-1).float())
        return _logits(parts, len(text_rows))

    def _score_pairs(self, pair: Callable[[int], tuple[str, ImageRecord]], n_pairs: int, desc: str) -> Tensor:
        """Cross-encoder logits [n_pairs] (CPU float32) for pairs 0..n_pairs-1, batched.

        Pairs are materialised per batch, so only that batch's texts are tokenized and
        only its images collated: memory stays bounded however many pairs there are. Each
        distinct text and image of a batch is prepared and sent to the device once, then
        repeated there: a reranked query recurs in all its k pairs, so this preparation (not
        the model) is what bounds reranking on a GPU. Logits stay on the device until the end,
        so preparing the next batch overlaps the device's work on this one.
        """
        cross = self.cross_encoder
        device = device_of(cross)
        parts = []
        starts = range(0, n_pairs, self.rerank_batch_size)
        with inference(cross):
            for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
                stop = min(start + self.rerank_batch_size, n_pairs)
                texts, images = zip(*(pair(i) for i in range(start, stop)))
                (texts, text_rows), (images, image_rows) = _distinct(texts), _distinct(images)
                logits = self._call(
                    cross,
                    "score",
                    _repeat(cross.tokenize(texts), text_rows, device),
                    _repeat(self._collate(images), image_rows, device),
                )
                if logits.numel() != stop - start:
                    raise ValueError(
                        f"cross_encoder.score returned shape {tuple(logits.shape)} for {stop - start} pairs; "
                        "expected one logit per pair"
                    )
                parts.append(logits.reshape(-1).float())
        return _logits(parts, n_pairs)

    def _require_cross(self) -> None:
        if self.cross_encoder is None:
            raise ValueError("reranking and cross_all need a cross_encoder; RetrieveRerank was built without one")


def image_major(image_rows: list[int], score: Callable[[list[int]], Tensor]) -> Tensor:
    """score(pair positions) run over the pairs sorted by image (stable), the logits put back in
    the pairs' own order."""
    order = sorted(range(len(image_rows)), key=image_rows.__getitem__)
    logits = score(order)
    out = torch.empty_like(logits)
    out[torch.tensor(order, dtype=torch.long)] = logits
    return out


def _distinct(items: Sequence[T]) -> tuple[list[T], list[int]]:
    """The distinct items in first-seen order (texts by value, records by identity) and, for each
    item, its row among them."""
    first: dict[object, int] = {}
    distinct: list[T] = []
    rows = []
    for item in items:
        key = item if isinstance(item, str) else id(item)
        if key not in first:
            first[key] = len(distinct)
            distinct.append(item)
        rows.append(first[key])
    return distinct, rows


def _repeat(batch: dict[str, Tensor], rows: list[int], device: torch.device) -> dict[str, Tensor]:
    """A batch of distinct items moved to `device`, then its rows repeated as `rows` lists them
    (every tensor is batch-first)."""
    batch = to_device(batch, device)
    if rows == list(range(len(rows))):
        return batch
    index = torch.tensor(rows, device=device)
    return {key: value.index_select(0, index) if isinstance(value, Tensor) else value for key, value in batch.items()}


def _logits(parts: list[Tensor], n: int) -> Tensor:
    """Per-batch logits (on the device) as one CPU float32 vector; one copy, one wait."""
    return torch.cat(parts).cpu() if parts else torch.empty(n, dtype=torch.float32)
