"""Retrieve with the bi-encoder, rerank the top candidates with the cross-encoder.

`RetrieveRerank` is the one retrieval path: the evaluation callback, the benchmarks and
the public search API all go through it, so metrics, timings and search results agree.

Model contracts (duck-typed, so any module that follows them plugs in):
- bi_encoder: `tokenize(texts) -> dict[str, Tensor]`, `embed_texts(text_batch) -> [B, E]`,
  `embed_images(image_batch) -> [B, E]`, both L2-normalised; image_batch = its `collate_images(records)`
  (region features for single-stream backbones, processed pixels for CLIP-like ones).
- cross_encoder: `tokenize(texts)`, `score(text_batch, image_batch) -> [B]` logits for the
  aligned pairs (text i, image i); higher is a better match.
- a late-interaction cross-encoder (`late` true, `join_layer` m, `lower_text`, `lower_image`,
  `score_lower`; retrerank.encoders.cross) is served from cached layer-m states: each corpus
  item's states are kept at index time (`StateCache`, float16), each query's computed once, and
  reranking runs only blocks [m, L) per pair. When the bi-encoder computes the same lower blocks
  (`bi_encoder.shares_lower_layers(cross)`), one pass gives both the embedding and the states.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord, RetrievalSplit
from retrerank.distributed import gather_rows, shard, world
from retrerank.retrieval.faiss_index import make_index
from retrerank.retrieval.index import ExactIndex
from retrerank.retrieval.methods import Method
from retrerank.retrieval.metrics import DIRECTIONS, method_metrics, ranking_precision, recall_at_k
from retrerank.retrieval.state_cache import StateCache

T = TypeVar("T")
SCORINGS = ("cross", "cross+bi")


@dataclass
class SearchResult:
    """Ranked corpus rows per query, best first (on CPU).

    The first `reranked` columns carry reranking scores (cross logit, plus the weighted
    cosine with scoring="cross+bi"); the columns after them carry bi-encoder cosines, a
    different scale, and are ranked below the reranked ones whatever their value.
    """

    indices: Tensor  # [Q, k] int64 rows of the indexed corpus
    scores: Tensor  # [Q, k] float32
    reranked: int = 0

    def lookup(self, corpus: Sequence[T]) -> list[list[T]]:
        """The corpus items (records, ids, texts) in ranked order, one list per query."""
        return [[corpus[i] for i in row] for row in self.indices.tolist()]


class RetrieveRerank:
    def __init__(
        self,
        bi_encoder: nn.Module,
        cross_encoder: nn.Module | None = None,
        *,
        batch_size: int = 128,
        rerank_batch_size: int = 128,
        chunk_size: int = 4096,
        scoring: str = "cross",
        bi_weight: float = 1.0,
        progress: bool = True,
        index: str = "exact",
        ivf_nlist: int = 1024,
        ivf_nprobe: int = 16,
    ) -> None:
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {list(SCORINGS)}, got {scoring!r}")
        if min(batch_size, rerank_batch_size, chunk_size) < 1:
            raise ValueError("batch_size, rerank_batch_size and chunk_size must be >= 1")
        self.bi_encoder = bi_encoder
        self.cross_encoder = cross_encoder
        self.batch_size = batch_size
        self.rerank_batch_size = rerank_batch_size
        self.chunk_size = chunk_size
        self.scoring = scoring
        self.bi_weight = bi_weight
        self.progress = progress
        self.index_kind, self.ivf_nlist, self.ivf_nprobe = index, ivf_nlist, ivf_nprobe  # see faiss_index.make_index
        self.images: list[ImageRecord] = []
        self.texts: list[str] = []
        self._image_index: ExactIndex | None = None
        self._text_index: ExactIndex | None = None
        self.image_states: StateCache | None = None  # late interaction only
        self.last_rerank_seconds = 0.0  # time the last search spent reranking (cross-encoder scoring)
        self.text_states: StateCache | None = None

    # ---------------------------------------------------------------- encoding

    def embed_images(self, images: Sequence[ImageRecord]) -> Tensor:
        """Bi-encoder embeddings [N, E] on the encoder's device, in batches of batch_size."""
        device = _device(self.bi_encoder)
        with _inference(self.bi_encoder):
            parts = [
                self.bi_encoder.embed_images(_to(self._collate(batch), device))
                for batch in self._batches(images, self.batch_size, "embed images")
            ]
        return _cat(parts, "images")

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        device = _device(self.bi_encoder)
        with _inference(self.bi_encoder):
            parts = [
                self.bi_encoder.embed_texts(_to(self.bi_encoder.tokenize(list(batch)), device))
                for batch in self._batches(texts, self.batch_size, "embed texts")
            ]
        return _cat(parts, "texts")

    def _collate(self, images: Sequence[ImageRecord]) -> dict[str, Tensor]:
        """The image batch the models read (both share one backbone, so one collation)."""
        return getattr(self.bi_encoder, "collate_images", collate_images)(images)

    def _late(self) -> bool:
        return self.cross_encoder is not None and bool(getattr(self.cross_encoder, "late", False))

    def _encode(self, items: Sequence, kind: str) -> tuple[Tensor, StateCache | None]:
        """Bi-encoder embeddings of texts or images and, with a late cross-encoder, their layer-m
        states. Under data parallelism each rank encodes its block and the blocks are gathered."""
        items = list(items)
        if world()[1] == 1:
            return self._encode_local(items, kind)
        embeddings, cache = self._encode_local(items[shard(len(items))], kind)
        if cache is not None:
            states, offsets = cache.flat()
            cache = StateCache.from_flat(cache.join_layer, gather_rows(states), gather_rows(offsets.diff()))
        return gather_rows(embeddings), cache

    def _encode_local(self, items: Sequence, kind: str) -> tuple[Tensor, StateCache | None]:
        images = kind == "images"
        if not items:  # a rank with an empty block
            return torch.empty(0, 0), (StateCache(self.cross_encoder.join_layer) if self._late() else None)
        if not self._late():
            return (self.embed_images(items) if images else self.embed_texts(items)), None
        bi, cross = self.bi_encoder, self.cross_encoder
        m, shared = cross.join_layer, bi.shares_lower_layers(cross)
        cache, parts, device = StateCache(m), [], _device(bi)
        with _inference(bi, cross):
            for batch in self._batches(items, self.batch_size, f"embed {kind}"):
                inputs = _to(self._collate(batch) if images else bi.tokenize(list(batch)), device)
                if shared:  # one run of blocks [0, m) for both encoders
                    lower = bi.images_lower(inputs, m) if images else bi.texts_lower(inputs, m)
                    parts.append(bi.embed_lower(lower, m, kind))
                else:
                    parts.append(bi.embed_images(inputs) if images else bi.embed_texts(inputs))
                    lower = cross.lower_image(inputs) if images else cross.lower_text(inputs)
                cache.add(*lower)
        return _cat(parts, kind), cache

    def index_images(self, images: Sequence[ImageRecord]) -> Tensor:
        """Make `images` the corpus of `search_texts`; returns their embeddings."""
        self.images = list(images)
        embeddings, self.image_states = self._encode(self.images, "images")
        self._image_index = make_index(self.index_kind, embeddings, self.ivf_nlist, self.ivf_nprobe)
        return embeddings

    def index_texts(self, texts: Sequence[str]) -> Tensor:
        """Make `texts` the corpus of `search_images`; returns their embeddings."""
        self.texts = list(texts)
        embeddings, self.text_states = self._encode(self.texts, "texts")
        self._text_index = make_index(self.index_kind, embeddings, self.ivf_nlist, self.ivf_nprobe)
        return embeddings

    # ------------------------------------------------------------------ search

    def search_each_other(self, images: Sequence[ImageRecord], texts: Sequence[str], k_images: int,
                          k_texts: int) -> tuple[SearchResult, SearchResult]:
        """Index `images` and `texts` and query each with the other, bi-encoder only: (every text's
        top k_images images, every image's top k_texts texts). Each item is encoded once, as corpus
        and as query (hard-negative mining searches a training split this way)."""
        image_embeddings, text_embeddings = self.index_images(images), self.index_texts(texts)
        return (self._search(text_embeddings, self._image_index, k_images, None, None),
                self._search(image_embeddings, self._text_index, k_texts, None, None))

    def search_texts(self, queries: Sequence[str], k: int, rerank_top: int | None = None) -> SearchResult:
        """Text queries -> rows of the indexed images. rerank_top=None: bi-encoder only."""
        if self._image_index is None:
            raise ValueError("no images indexed: call index_images first")
        queries = list(queries)
        embeddings, states = self._encode(queries, "texts")
        if states is not None:
            score = lambda q, c: self._score_states(states, q, self._corpus_states("image"), c)  # noqa: E731
        else:  # image-major: each candidate image is read and collated once per batch, not once per query
            score = lambda q, c: _image_major(  # noqa: E731
                c, lambda rows: self._score_pairs(lambda i: (queries[q[rows[i]]], self.images[c[rows[i]]]),
                                                  len(rows), "rerank"))
        return self._search(embeddings, self._image_index, k, rerank_top, score)

    def search_images(self, queries: Sequence[ImageRecord], k: int, rerank_top: int | None = None) -> SearchResult:
        """Image queries -> rows of the indexed texts. rerank_top=None: bi-encoder only."""
        if self._text_index is None:
            raise ValueError("no texts indexed: call index_texts first")
        queries = list(queries)
        embeddings, states = self._encode(queries, "images")
        if states is not None:
            score = lambda q, c: self._score_states(self._corpus_states("text"), c, states, q)  # noqa: E731
        else:
            score = lambda q, c: self._score_pairs(  # noqa: E731
                lambda i: (self.texts[c[i]], queries[q[i]]), len(q), "rerank")
        return self._search(embeddings, self._text_index, k, rerank_top, score)

    def rerank_ms_per_query(self, queries: Sequence, k: int, rerank_top: int, warmup: int = 1,
                            repeats: int = 3) -> float:
        """Median time of the reranking step alone (not retrieval) per query: text queries
        against the indexed images when `queries` are strings, image queries otherwise."""
        search = self.search_texts if isinstance(queries[0], str) else self.search_images
        times = []
        for _ in range(warmup + repeats):
            search(queries, k, rerank_top)
            times.append(self.last_rerank_seconds)
        return 1000 * statistics.median(times[warmup:]) / len(queries)

    def _corpus_states(self, kind: str) -> StateCache:
        cache = self.image_states if kind == "image" else self.text_states
        m = self.cross_encoder.join_layer
        if cache is None or cache.join_layer != m:
            raise ValueError(f"the indexed {kind}s have no cached states for join layer {m}: index them again")
        return cache

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
        clock = _clock(self.bi_encoder, self.cross_encoder)
        start = clock()
        logits = score(query_rows, candidate_rows)
        self.last_rerank_seconds = clock() - start
        scores = logits.view(n_queries, rerank_top)
        if self.scoring == "cross+bi":
            scores = scores + self.bi_weight * bi_scores[:, :rerank_top]
        # Stable: equal rerank scores keep the bi-encoder order.
        order = scores.argsort(dim=1, descending=True, stable=True)
        indices = torch.cat([head.gather(1, order), indices[:, rerank_top:]], 1)[:, :k]
        scores = torch.cat([scores.gather(1, order), bi_scores[:, rerank_top:]], 1)[:, :k]
        return SearchResult(gather_rows(indices), gather_rows(scores), reranked=min(rerank_top, k))

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
            logits = self._score_states(text_states, (rows // n_images).tolist(), image_states,
                                        (rows % n_images).tolist(), "score all pairs")
            scores = gather_rows(logits).view(len(texts), n_images)
        else:
            # image-major (pair p is text p % n_texts with image p // n_texts): an image is read and
            # collated once per batch of pairs, not once per text
            n_texts = len(texts)
            logits = self._score_pairs(lambda i: (texts[(mine.start + i) % n_texts],
                                                  images[(mine.start + i) // n_texts]), len(rows), "score all pairs")
            scores = gather_rows(logits).view(n_images, n_texts).T.contiguous()
        if self.scoring == "cross+bi":
            scores = scores + self.bi_weight * (self.embed_texts(texts) @ self.embed_images(images).T).cpu()
        return scores

    def _cross_states(self, items: Sequence, kind: str) -> StateCache:
        cross, cache = self.cross_encoder, StateCache(self.cross_encoder.join_layer)
        device = _device(cross)
        with _inference(cross):
            for batch in self._batches(items, self.batch_size, f"lower states of {kind}"):
                if kind == "images":
                    cache.add(*cross.lower_image(_to(self._collate(batch), device)))
                else:
                    cache.add(*cross.lower_text(_to(cross.tokenize(list(batch)), device)))
        return cache

    def _score_states(self, texts: StateCache, text_rows: list[int], images: StateCache, image_rows: list[int],
                      desc: str = "rerank") -> Tensor:
        """Late-interaction logits for pairs (texts[text_rows[i]], images[image_rows[i]]) from cached states."""
        cross = self.cross_encoder
        dtype = next(cross.parameters()).dtype
        parts = []
        starts = range(0, len(text_rows), self.rerank_batch_size)
        with _inference(cross):
            for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
                stop = min(start + self.rerank_batch_size, len(text_rows))
                logits = cross.score_lower(texts.gather(text_rows[start:stop], dtype),
                                           images.gather(image_rows[start:stop], dtype))
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
        device = _device(cross)
        parts = []
        starts = range(0, n_pairs, self.rerank_batch_size)
        with _inference(cross):
            for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
                stop = min(start + self.rerank_batch_size, n_pairs)
                texts, images = zip(*(pair(i) for i in range(start, stop)))
                (texts, text_rows), (images, image_rows) = _distinct(texts), _distinct(images)
                logits = cross.score(_repeat(cross.tokenize(texts), text_rows, device),
                                     _repeat(self._collate(images), image_rows, device))
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

    def _batches(self, items: Sequence[T], size: int, desc: str) -> Iterator[Sequence[T]]:
        starts = range(0, len(items), size)
        for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
            yield items[start : start + size]

    # -------------------------------------------------------------- evaluation

    def evaluate(
        self,
        split: RetrievalSplit,
        methods: Sequence[str | Method],
        ks: Sequence[int] = (1, 5, 10),
        stage: str = "test",
    ) -> dict[str, float]:
        """Recall@ks, R-Precision and mAP@R in both directions plus timings for each method, as one flat dict.

        methods: Methods or their text (retrerank.retrieval.methods): "bi", "rerank@{r}" (bi-encoder
        top-r reranked by the cross-encoder; a corpus smaller than r is reranked whole), "cross_all"
        (the cross-encoder scores every pair); metrics are named by `str(method)`. The corpus is indexed once;
        its time is reported as `{stage}/index_images_ms` and `{stage}/index_texts_ms`.
        Images without captions stay in the t2i corpus but are not i2t queries.
        Ground truth: a caption is relevant to its own image and, where the dataset records
        exact relevance (CaptionRecord.also), to every other image it is true of; an image
        query's relevant captions are all captions true of it. Every method ranks each query
        at least R deep (R = its number of relevant items) for R-Precision and mAP@R.
        """
        plan = [Method.parse(str(method)) for method in methods]  # a bad name fails before any work
        ks = list(ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be a non-empty list of k >= 1, got {ks}")
        if max(ks) > min(len(split.images), len(split.captions)):
            raise ValueError(
                f"k={max(ks)} exceeds the size of split {split.name!r} "
                f"({len(split.images)} images, {len(split.captions)} captions)"
            )
        if any(method.kind != "bi" for method in plan):
            self._require_cross()

        texts = split.texts
        t2i_relevant = split.caption_relevant  # each caption's own image, or every image it is true of
        image_captions = split.image_captions()
        i2t_rows = [i for i, captions in enumerate(image_captions) if len(captions)]
        i2t_queries = [split.images[i] for i in i2t_rows]
        i2t_relevant = [image_captions[i] for i in i2t_rows]
        relevant = {"t2i": t2i_relevant, "i2t": i2t_relevant}
        corpus_size = {"t2i": len(split.images), "i2t": len(texts)}
        most_relevant = {d: max(map(len, relevant[d])) for d in DIRECTIONS}
        clock = _clock(self.bi_encoder, self.cross_encoder)

        def depth(direction: str, rerank_top: int | None) -> int:
            # rerank@r on a corpus smaller than r reranks all of it
            n = corpus_size[direction]
            return min(n, max(max(ks), most_relevant[direction], min(rerank_top or 0, n)))

        results: dict[str, float] = {}
        if any(method.kind != "cross_all" for method in plan):
            start = clock()
            self.index_images(split.images)
            results[f"{stage}/index_images_ms"] = 1000 * (clock() - start)
            start = clock()
            self.index_texts(texts)
            results[f"{stage}/index_texts_ms"] = 1000 * (clock() - start)

        for method in plan:
            if method.kind == "cross_all":
                start = clock()
                scores = self.score_all(texts, split.images)
                total_ms = 1000 * (clock() - start)
                rankings = {
                    "t2i": _rank(scores, depth("t2i", None)),
                    "i2t": _rank(scores.T[i2t_rows], depth("i2t", None)),
                }
                # Each image query needs n_texts pair scores and each text query n_images.
                ms = {"i2t": total_ms / len(split.images), "t2i": total_ms / len(texts)}
            else:
                rankings, ms = {}, {}
                for direction, search, queries in (
                    ("t2i", self.search_texts, texts),
                    ("i2t", self.search_images, i2t_queries),
                ):
                    start = clock()
                    rankings[direction] = search(queries, depth(direction, method.depth), method.depth).indices
                    ms[direction] = 1000 * (clock() - start) / len(queries)
            scores_by_direction = {
                d: {**recall_at_k(rankings[d], relevant[d], ks), **ranking_precision(rankings[d], relevant[d])}
                for d in DIRECTIONS
            }
            results.update(method_metrics(stage, str(method), scores_by_direction, ms))
        return results


def _rank(scores: Tensor, k: int) -> Tensor:
    """Top-k columns per row, best first, ties by lower column (as ExactIndex does)."""
    return scores.argsort(dim=1, descending=True, stable=True)[:, :k]


def _device(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:  # a parameter-free module (e.g. a fixed scorer) runs on CPU
        return torch.device("cpu")


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}


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
    batch = _to(batch, device)
    if rows == list(range(len(rows))):
        return batch
    index = torch.tensor(rows, device=device)
    return {key: value.index_select(0, index) if isinstance(value, Tensor) else value for key, value in batch.items()}


def _image_major(image_rows: list[int], score: Callable[[list[int]], Tensor]) -> Tensor:
    """score(pair positions) run over the pairs sorted by image (stable), the logits put back in
    the pairs' own order."""
    order = sorted(range(len(image_rows)), key=image_rows.__getitem__)
    logits = score(order)
    out = torch.empty_like(logits)
    out[torch.tensor(order, dtype=torch.long)] = logits
    return out


def _logits(parts: list[Tensor], n: int) -> Tensor:
    """Per-batch logits (on the device) as one CPU float32 vector; one copy, one wait."""
    return torch.cat(parts).cpu() if parts else torch.empty(n, dtype=torch.float32)


def _cat(parts: list[Tensor], what: str) -> Tensor:
    if not parts:
        raise ValueError(f"no {what} to embed")
    return torch.cat(parts).float()


def _clock(*modules: nn.Module | None) -> Callable[[], float]:
    """perf_counter that first waits for queued CUDA work, so timings are wall clock."""
    cuda = {d for d in (_device(m) for m in modules if m is not None) if d.type == "cuda"}

    def now() -> float:
        for device in cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


@contextmanager
def _inference(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode + inference_mode; afterwards every submodule gets its own flag back.

    Flags are saved per submodule (not one per model) because a partly frozen model can
    mix training and eval submodules, and bi/cross encoders may share submodules.
    """
    saved = {m: m.training for module in modules if module is not None for m in module.modules()}
    try:
        for module in modules:
            if module is not None:
                module.eval()
        with torch.inference_mode():
            yield
    finally:
        for m, training in saved.items():
            m.training = training
