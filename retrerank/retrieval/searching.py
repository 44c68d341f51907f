"""The pipeline's search part: index a corpus, retrieve the top k with the bi-encoder, rerank the head.

`Search` is a mixin of `RetrieveRerank` (retrerank.retrieval.pipeline). Names say the direction:
`index_images` makes images the corpus that `text_to_image` queries with texts; `index_texts`
makes texts the corpus that `image_to_text` queries with images. (Not to be confused with
retrerank.search, the public Searcher API built on this pipeline.)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from retrerank.data.records import ImageRecord
from retrerank.distributed import gather_rows, shard
from retrerank.retrieval.faiss_index import make_index
from retrerank.retrieval.index import ExactIndex
from retrerank.retrieval.scoring import image_major
from retrerank.torch_utils import synced_clock

T = TypeVar("T")


@dataclass
class SearchResult:
    """Ranked corpus rows per query, best first (on CPU).

    The first `reranked` columns carry reranking scores (cross logit, plus the weighted
    cosine with scoring="cross+bi"); the columns after them carry bi-encoder cosines, a
    different scale, and are ranked below the reranked ones whatever their value.
    `rerank_seconds`: wall time of the reranking step alone (cross-encoder scoring; 0 without it).
    """

    indices: Tensor  # [Q, k] int64 rows of the indexed corpus
    scores: Tensor  # [Q, k] float32
    reranked: int = 0
    rerank_seconds: float = 0.0

    def lookup(self, corpus: Sequence[T]) -> list[list[T]]:
        """The corpus items (records, ids, texts) in ranked order, one list per query."""
        return [[corpus[i] for i in row] for row in self.indices.tolist()]


class Search:
    """Indexing and searching in both directions (a part of RetrieveRerank; uses its Encoding and
    PairScoring parts)."""

    bi_encoder: nn.Module
    cross_encoder: nn.Module | None
    chunk_size: int
    scoring: str
    bi_weight: float
    index_kind: str
    ivf_nlist: int
    ivf_nprobe: int
    images: list[ImageRecord]
    texts: list[str]
    _image_index: ExactIndex | None
    _text_index: ExactIndex | None

    def index_images(self, images: Sequence[ImageRecord]) -> Tensor:
        """Make `images` the corpus of `text_to_image`; returns their embeddings."""
        self.images = list(images)
        embeddings, self.image_states = self._encode(self.images, "images")
        self._image_index = make_index(self.index_kind, embeddings, self.ivf_nlist, self.ivf_nprobe)
        return embeddings

    def index_texts(self, texts: Sequence[str]) -> Tensor:
        """Make `texts` the corpus of `image_to_text`; returns their embeddings."""
        self.texts = list(texts)
        embeddings, self.text_states = self._encode(self.texts, "texts")
        self._text_index = make_index(self.index_kind, embeddings, self.ivf_nlist, self.ivf_nprobe)
        return embeddings

    def search_each_other(
        self, images: Sequence[ImageRecord], texts: Sequence[str], k_images: int, k_texts: int
    ) -> tuple[SearchResult, SearchResult]:
        """Index `images` and `texts` and query each with the other, bi-encoder only: (every text's
        top k_images images, every image's top k_texts texts). Each item is encoded once, as corpus
        and as query (hard-negative mining searches a training split this way)."""
        image_embeddings, text_embeddings = self.index_images(images), self.index_texts(texts)
        return (
            self._search(text_embeddings, self._image_index, k_images, None, None),
            self._search(image_embeddings, self._text_index, k_texts, None, None),
        )

    def text_to_image(self, queries: Sequence[str], k: int, rerank_top: int | None = None) -> SearchResult:
        """Text queries -> rows of the indexed images. rerank_top=None: bi-encoder only."""
        if self._image_index is None:
            raise ValueError("no images indexed: call index_images first")
        queries = list(queries)
        embeddings, states = self._encode(queries, "texts")
        if states is not None:
            score = lambda q, c: self._score_states(states, q, self._corpus_states("image"), c)  # noqa: E731
        else:  # image-major: each candidate image is read and collated once per batch, not once per query
            score = lambda q, c: image_major(  # noqa: E731
                c,
                lambda rows: self._score_pairs(
                    lambda i: (queries[q[rows[i]]], self.images[c[rows[i]]]), len(rows), "rerank"
                ),
            )
        return self._search(embeddings, self._image_index, k, rerank_top, score)

    def image_to_text(self, queries: Sequence[ImageRecord], k: int, rerank_top: int | None = None) -> SearchResult:
        """Image queries -> rows of the indexed texts. rerank_top=None: bi-encoder only."""
        if self._text_index is None:
            raise ValueError("no texts indexed: call index_texts first")
        queries = list(queries)
        embeddings, states = self._encode(queries, "images")
        if states is not None:
            score = lambda q, c: self._score_states(self._corpus_states("text"), c, states, q)  # noqa: E731
        else:
            score = lambda q, c: self._score_pairs(  # noqa: E731
                lambda i: (self.texts[c[i]], queries[q[i]]), len(q), "rerank"
            )
        return self._search(embeddings, self._text_index, k, rerank_top, score)

    def rerank_ms_per_query(
        self, queries: Sequence, k: int, rerank_top: int, warmup: int = 1, repeats: int = 3
    ) -> float:
        """Median time of the reranking step alone (not retrieval) per query: text queries
        against the indexed images when `queries` are strings, image queries otherwise."""
        search = self.text_to_image if isinstance(queries[0], str) else self.image_to_text
        times = [search(queries, k, rerank_top).rerank_seconds for _ in range(warmup + repeats)]
        return 1000 * statistics.median(times[warmup:]) / len(queries)

    def _search(
        self,
        query_embeddings: Tensor,
        index: ExactIndex,
        k: int,
        rerank_top: int | None,
        score: Callable[[list[int], list[int]], Tensor],
    ) -> SearchResult:
        """score(query_rows, candidate_rows) -> rerank logits [n] for those pairs."""
        if rerank_top is not None:
            if rerank_top < 1:
                raise ValueError(f"rerank_top must be >= 1, got {rerank_top}")
            self._require_cross()
            # Reranking "the top r" of a corpus smaller than r reranks all of it.
            rerank_top = min(rerank_top, len(index))
        depth = max(k, rerank_top or 0)
        mine = shard(len(query_embeddings))  # under data parallelism: this rank's queries
        # Outside inference_mode on purpose: results are ordinary tensors users may edit.
        bi_scores, indices = index.search(query_embeddings[mine], depth, chunk_size=self.chunk_size)
        bi_scores, indices = bi_scores.cpu(), indices.cpu()
        if rerank_top is None:
            return SearchResult(gather_rows(indices[:, :k]), gather_rows(bi_scores[:, :k]))

        head = indices[:, :rerank_top]
        n_queries = head.shape[0]
        query_rows = (torch.arange(n_queries) + mine.start).repeat_interleave(rerank_top).tolist()
        candidate_rows = head.reshape(-1).tolist()
        clock = synced_clock(self.bi_encoder, self.cross_encoder)
        start = clock()
        logits = score(query_rows, candidate_rows)
        rerank_seconds = clock() - start
        scores = logits.view(n_queries, rerank_top)
        if self.scoring == "cross+bi":
            scores = scores + self.bi_weight * bi_scores[:, :rerank_top]
        # Stable: equal rerank scores keep the bi-encoder order.
        order = scores.argsort(dim=1, descending=True, stable=True)
        indices = torch.cat([head.gather(1, order), indices[:, rerank_top:]], 1)[:, :k]
        scores = torch.cat([scores.gather(1, order), bi_scores[:, rerank_top:]], 1)[:, :k]
        return SearchResult(
            gather_rows(indices), gather_rows(scores), reranked=min(rerank_top, k), rerank_seconds=rerank_seconds
        )
