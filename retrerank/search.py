"""Public search API: a trained checkpoint as a text <-> image search engine.

    searcher = Searcher.from_checkpoint("runs/<run>/checkpoints/best.ckpt")
    searcher.index_images(images)                    # list[ImageRecord]
    searcher.search_text(["a red circle left of a blue square"], k=5)  # -> [[Hit(id, score), ...]]

It is a thin layer over the same RetrieveRerank pipeline that evaluation uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from retrerank.config import EvalConfig
from retrerank.data.records import ImageRecord
from retrerank.retrieval.pipeline import RetrieveRerank, SearchResult


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


class Searcher:
    def __init__(self, system, eval_cfg: EvalConfig | None = None, progress: bool = False):
        self.pipeline = RetrieveRerank.from_config(system, eval_cfg or EvalConfig(), progress)
        self.image_ids: list[str] = []
        self.caption_ids: list[str] = []

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, map_location: str = "cpu", progress: bool = False) -> "Searcher":
        from retrerank.build import load_system

        system, cfg = load_system(checkpoint, map_location)
        return cls(system, cfg.eval, progress)

    def index_images(self, images: Sequence[ImageRecord]) -> None:
        self.pipeline.index_images(images)
        self.image_ids = [im.image_id for im in images]

    def index_captions(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"index_captions got {len(texts)} texts but {len(ids)} ids")
        self.pipeline.index_texts(texts)
        self.caption_ids = ids

    def search_text(self, queries: str | Sequence[str], k: int = 10, rerank_top: int | None = 20) -> list[list[Hit]]:
        """Images for each text query, best first; rerank_top=None: bi-encoder only."""
        if not self.image_ids:
            raise ValueError("no images indexed: call index_images first")
        queries = [queries] if isinstance(queries, str) else list(queries)
        return self._hits(self.pipeline.text_to_image(queries, k, rerank_top), self.image_ids)

    def search_image(self, queries: Sequence[ImageRecord], k: int = 10, rerank_top: int | None = 20) -> list[list[Hit]]:
        """Captions for each image query, best first."""
        if not self.caption_ids:
            raise ValueError("no captions indexed: call index_captions first")
        return self._hits(self.pipeline.image_to_text(list(queries), k, rerank_top), self.caption_ids)

    @staticmethod
    def _hits(result: SearchResult, ids: list[str]) -> list[list[Hit]]:
        return [[Hit(ids[i], float(s)) for i, s in zip(row_i.tolist(), row_s.tolist())]
                for row_i, row_s in zip(result.indices, result.scores)]
