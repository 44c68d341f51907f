"""Retrieve with the bi-encoder, rerank the top candidates with the cross-encoder.

`RetrieveRerank` is the one retrieval path: the evaluation callback, the benchmarks and
the public search API all go through it (built by `RetrieveRerank.from_config`), so metrics,
timings and search results agree. It is composed of four parts, one file each:

- retrerank.retrieval.encoding  `Encoding`: embeddings and the layer-m state cache
- retrerank.retrieval.searching `Search`: index a corpus, `text_to_image` / `image_to_text`, `SearchResult`
- retrerank.retrieval.scoring   `PairScoring`: cross-encoder scores of pairs, `score_all`
- retrerank.retrieval.evaluate  `Evaluation`: `evaluate(split, methods, ks)` -> metrics + timings

With `compile=True` (eval.compile) every encoder call of these parts runs through `torch.compile`
on inputs padded to a few length buckets (`Encoding._call`, retrerank.compile).

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

from typing import TYPE_CHECKING

import torch
from torch import nn

from retrerank.compile import CompiledInference
from retrerank.data.records import ImageRecord
from retrerank.retrieval.encoding import Encoding
from retrerank.retrieval.evaluate import Evaluation
from retrerank.retrieval.index import ExactIndex
from retrerank.retrieval.scoring import PairScoring
from retrerank.retrieval.searching import Search, SearchResult
from retrerank.retrieval.state_cache import StateCache

if TYPE_CHECKING:
    from retrerank.config import EvalConfig

__all__ = ["RetrieveRerank", "SearchResult", "SCORINGS", "bi_weight", "trained_scale"]

SCORINGS = ("cross", "cross+bi")


class RetrieveRerank(Evaluation, Search, PairScoring, Encoding):
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
        compile: bool = False,
        state_dtype: torch.dtype = torch.float16,
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
        self.text_states: StateCache | None = None
        # float32 gives the scores of the uncached model exactly; float16 halves the cache's memory
        self.state_dtype = state_dtype
        # compile: every encoder call through torch.compile on bucketed shapes (retrerank.compile)
        self.compiled = CompiledInference() if compile else None

    @classmethod
    def from_config(cls, system, cfg: EvalConfig, progress: bool = True, rerank: bool = True) -> RetrieveRerank:
        """The pipeline of a system (its `bi_encoder` and `cross_encoder`) with the eval settings `cfg`
        (retrerank.config.EvalConfig); rerank=False: bi-encoder search only (no cross-encoder, so a
        late-interaction model caches no layer states)."""
        return cls(
            system.bi_encoder,
            system.cross_encoder if rerank else None,
            batch_size=cfg.batch_size,
            rerank_batch_size=cfg.rerank_batch_size,
            chunk_size=cfg.chunk_size,
            scoring=cfg.scoring,
            bi_weight=bi_weight(system, cfg),
            progress=progress,
            index=cfg.index,
            ivf_nlist=cfg.ivf_nlist,
            ivf_nprobe=cfg.ivf_nprobe,
            compile=cfg.compile,
        )


def bi_weight(system, cfg: EvalConfig) -> float:
    """eval.bi_weight, or (None) the trained logit scale of the system's contrastive loss."""
    return cfg.bi_weight if cfg.bi_weight is not None else trained_scale(system)


def trained_scale(system) -> float:
    """The trained logit scale (1/T) of the system's contrastive loss; 1.0 where it has none."""
    scale = getattr(getattr(system, "contrastive", None), "scale", None)
    return float(scale.detach()) if torch.is_tensor(scale) else float(scale) if scale is not None else 1.0
