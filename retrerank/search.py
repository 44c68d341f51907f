"""Public search API: a trained checkpoint as a text <-> image search engine.

    searcher = Searcher.from_checkpoint("runs/<run>/checkpoints/best.ckpt")
    searcher.index_images(images)                    # list[ImageRecord]
    searcher.search_text(["a red circle left of a blue square"], k=5)  # -> [[Hit(id, score), ...]]
    searcher.save_index("my-index")                  # later: Searcher.from_checkpoint(..., index="my-index")
    searcher.encode_texts(["a red circle"])          # [1, E] L2-normalised bi-encoder embeddings

    searcher, split = open_run("runs/<run>")         # a run folder's best checkpoint and its test split
    searcher, split = open_run("runs/<run>", data_root="/data")  # ... read from (or generated into) /data

It is a thin layer over the same RetrieveRerank pipeline that evaluation uses: encoding, search and
reranking are the pipeline's; this file adds ids, timings, the scoring switch and saved indexes
(their format: retrerank.search_index).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from retrerank.config import Config, ConfigError, DataConfig, EvalConfig
from retrerank.data.errors import DataError
from retrerank.data.records import ImageRecord, RetrievalSplit
from retrerank.retrieval.faiss_index import make_index
from retrerank.retrieval.pipeline import SCORINGS, RetrieveRerank, SearchResult
from retrerank.search_index import (
    cache_from,
    cache_tensors,
    fingerprint,
    read_index,
    records_from,
    records_tensors,
    write_index,
)
from retrerank.torch_utils import device_of, synced_clock

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


@dataclass(frozen=True)
class Ranking:
    """Hits of a batch of queries and what the two stages took (wall time, whole batch)."""

    hits: list[list[Hit]]
    reranked: int  # the first `reranked` hits of a row carry rerank scores, the rest bi-encoder cosines
    retrieve_ms: float  # query encoding + bi-encoder top k
    rerank_ms: float  # cross-encoder reranking alone (0 without it)


class Searcher:
    def __init__(self, system, eval_cfg: EvalConfig | None = None, progress: bool = False):
        eval_cfg = eval_cfg or EvalConfig()
        self.system = system
        self.pipeline = RetrieveRerank.from_config(system, eval_cfg, progress)
        self.rerank_depth = max(eval_cfg.rerank_ks or [20])  # what the tools rerank by default: the run's deepest
        self.checkpoint: str | None = None  # where the weights came from (from_checkpoint), kept in saved indexes
        self.config = None  # the checkpoint's whole Config (from_checkpoint)
        self.image_ids: list[str] = []
        self.caption_ids: list[str] = []
        self._embeddings: dict[str, Tensor] = {}  # "image" / "caption": the indexed corpora's embeddings
        self._fingerprint: str | None = None

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, map_location: str = "cpu", progress: bool = False, index: str | Path | None = None
    ) -> Searcher:
        """The checkpoint's model with its eval settings; `index`: a folder written by save_index."""
        from retrerank.build import load_system

        system, cfg = load_system(checkpoint, map_location)
        searcher = cls(system, cfg.eval, progress)
        searcher.checkpoint, searcher.config = str(checkpoint), cfg
        if index is not None:
            searcher.load_index(index)
        return searcher

    # ---- embeddings -----------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised bi-encoder embeddings [N, E] (float32, on the model's device): the vectors
        the index compares by inner product."""
        return self.pipeline.embed_texts(list(texts))

    def encode_images(self, images: Sequence[ImageRecord]) -> Tensor:
        return self.pipeline.embed_images(list(images))

    # ---- corpora ----------------------------------------------------------------------------
    def index_images(self, images: Sequence[ImageRecord]) -> None:
        self._embeddings["image"] = self.pipeline.index_images(images)
        self.image_ids = [im.image_id for im in images]

    def index_captions(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"index_captions got {len(texts)} texts but {len(ids)} ids")
        self._embeddings["caption"] = self.pipeline.index_texts(texts)
        self.caption_ids = ids

    def index_split(self, split: RetrievalSplit) -> None:
        """A split's images and captions (caption ids as ids): both directions searchable."""
        self.index_images(split.images)
        self.index_captions(split.texts, [c.caption_id for c in split.captions])

    # ---- search -----------------------------------------------------------------------------
    def search_text(
        self, queries: str | Sequence[str], k: int = 10, rerank_top: int | None = 20, scoring: str | None = None
    ) -> list[list[Hit]]:
        """Images for each text query, best first; rerank_top=None: bi-encoder only."""
        return self.rank_text(queries, k, rerank_top, scoring).hits

    def search_image(
        self, queries: Sequence[ImageRecord], k: int = 10, rerank_top: int | None = 20, scoring: str | None = None
    ) -> list[list[Hit]]:
        """Captions for each image query, best first."""
        return self.rank_image(queries, k, rerank_top, scoring).hits

    def rank_text(
        self, queries: str | Sequence[str], k: int = 10, rerank_top: int | None = 20, scoring: str | None = None
    ) -> Ranking:
        """search_text with the stage timings. scoring: "cross" or "cross+bi" for this call (None: the
        eval config's)."""
        if not self.image_ids:
            raise ValueError("no images indexed: call index_images first")
        queries = [queries] if isinstance(queries, str) else list(queries)
        pipeline = self._scored(scoring)
        return self._timed(lambda: pipeline.text_to_image(queries, k, rerank_top), self.image_ids)

    def rank_image(
        self, queries: Sequence[ImageRecord], k: int = 10, rerank_top: int | None = 20, scoring: str | None = None
    ) -> Ranking:
        if not self.caption_ids:
            raise ValueError("no captions indexed: call index_captions first")
        pipeline = self._scored(scoring)
        return self._timed(lambda: pipeline.image_to_text(list(queries), k, rerank_top), self.caption_ids)

    def _scored(self, scoring: str | None) -> RetrieveRerank:
        """The pipeline, or a shallow copy that scores the other way: the same model, indexes and
        caches, nothing re-encoded, and the shared pipeline is never changed under another caller."""
        if scoring is None or scoring == self.pipeline.scoring:
            return self.pipeline
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {list(SCORINGS)}, got {scoring!r}")
        pipeline = copy.copy(self.pipeline)
        pipeline.scoring = scoring
        return pipeline

    def _timed(self, search, ids: list[str]) -> Ranking:
        clock = synced_clock(self.pipeline.bi_encoder, self.pipeline.cross_encoder)
        start = clock()
        result: SearchResult = search()
        total = clock() - start
        hits = [
            [Hit(ids[i], float(s)) for i, s in zip(row_i.tolist(), row_s.tolist())]
            for row_i, row_s in zip(result.indices, result.scores)
        ]
        return Ranking(hits, result.reranked, 1000 * (total - result.rerank_seconds), 1000 * result.rerank_seconds)

    # ---- saved indexes (format and checks: retrerank.search_index) --------------------------
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.system)
        return self._fingerprint

    def _reads_records(self) -> bool:
        """Whether reranking reads the image records (a full-attention cross-encoder) rather than
        cached layer-m states (a late-interaction one)."""
        cross = self.pipeline.cross_encoder
        return cross is not None and not getattr(cross, "late", False)

    def save_index(self, path: str | Path) -> Path:
        """The indexed corpora as a folder (see retrerank.search_index for what it keeps and why)."""
        if not self.image_ids and not self.caption_ids:
            raise ValueError("nothing indexed: call index_images or index_captions first")
        p = self.pipeline
        tensors = {f"{name}_embeddings": e for name, e in self._embeddings.items()}
        image_states = p.image_states if self.image_ids else None  # late interaction only
        caption_states = p.text_states if self.caption_ids else None
        tensors |= cache_tensors("image", image_states) | cache_tensors("caption", caption_states)
        records = bool(self.image_ids) and self._reads_records()
        if records:
            tensors |= records_tensors(p.images)
        meta = {
            "fingerprint": self.fingerprint,
            "checkpoint": self.checkpoint,
            "images": {
                "ids": self.image_ids,
                "records": records,
                "join_layer": getattr(image_states, "join_layer", None),
            },
            "captions": {
                "ids": self.caption_ids,
                "texts": p.texts if self.caption_ids else [],
                "join_layer": getattr(caption_states, "join_layer", None),
            },
        }
        return write_index(path, meta, tensors)

    def load_index(self, path: str | Path) -> None:
        """Make a saved index this searcher's corpora, as index_images / index_captions would. The
        pipeline's corpus attributes (those Search.index_images / index_texts set) are filled in
        directly, the exact or FAISS index rebuilt from the saved embeddings: nothing is re-encoded."""
        p = self.pipeline
        meta, tensors = read_index(path, self.fingerprint, device_of(p.bi_encoder))
        images, captions = meta["images"], meta["captions"]
        self.image_ids, self.caption_ids, self._embeddings = [], [], {}
        if images["ids"]:
            p.images = records_from(images["ids"], tensors) if images["records"] else []
            p.image_states = cache_from("image", tensors, images["join_layer"])
            p._image_index = make_index(p.index_kind, tensors["image_embeddings"], p.ivf_nlist, p.ivf_nprobe)
            self.image_ids, self._embeddings["image"] = images["ids"], tensors["image_embeddings"]
        if captions["ids"]:
            p.texts = captions["texts"]
            p.text_states = cache_from("caption", tensors, captions["join_layer"])
            p._text_index = make_index(p.index_kind, tensors["caption_embeddings"], p.ivf_nlist, p.ivf_nprobe)
            self.caption_ids, self._embeddings["caption"] = captions["ids"], tensors["caption_embeddings"]


def best_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """`<run_dir>/checkpoints/best.ckpt`, the one a run tests with (which="last": last.ckpt, the end of
    training); a ConfigError (one line) without it."""
    checkpoint = Path(run_dir) / "checkpoints" / f"{which}.ckpt"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"no {which} checkpoint in {run_dir}: there is no such run folder")
    if not checkpoint.is_file():
        raise ConfigError(f"no {which} checkpoint in {run_dir} (looked for {checkpoint})")
    return checkpoint


def open_run(
    run_dir: str | Path,
    split: str = "test",
    map_location: str = "cpu",
    progress: bool = False,
    data_root: str | Path | None = None,
) -> tuple[Searcher, RetrievalSplit]:
    """A run folder's best checkpoint as a Searcher, and one of the run's splits as its data module
    builds it (the run's dataset, setup and languages; "test" is the held-out split in the novel setup).
    The data is read from `data_root` (the synthetic data is generated there on first use), by default
    the current project's data/ folder: never from a root stored in the checkpoint (see `user_data_root`).
    Nothing is indexed yet: `searcher.index_split(split)`."""
    from retrerank.build import build_datamodule

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    searcher = Searcher.from_checkpoint(best_checkpoint(run_dir), map_location, progress)
    searcher.config = with_data_root(searcher.config, data_root, "--data-root")
    datamodule = build_datamodule(searcher.config, searcher.system)
    datamodule.prepare_data()
    datamodule.setup("test")
    return searcher, getattr(datamodule, f"{split}_split")


def user_data_root(data_root: str | Path | None, option: str, stored: str | None = None) -> str:
    """Where a tool reads a trained run's data, and writes the synthetic data's cache: `data_root` as the
    user gave it (`option` names the argument), else the current project's data/ folder. A root stored in
    a checkpoint is never used: a checkpoint from elsewhere would choose where the tool writes. Without
    `data_root` and without a data/ folder here, a ConfigError asks for one (`stored`: the checkpoint's
    root, shown as a hint)."""
    if data_root is not None:
        root = Path(data_root)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{option} {root}: a file, not a data folder")
        return str(root)
    root = Path(DataConfig().root)
    if not root.is_dir():
        hint = f"; the run was trained with data.root={stored}" if stored else ""
        raise ConfigError(
            f"no data folder {root.resolve()}: give the folder that holds the run's dataset (or where its "
            f"synthetic data may be generated) with {option}{hint}"
        )
    return str(root)


def with_data_root(cfg: Config, data_root: str | Path | None, option: str) -> Config:
    """`cfg` with data.root replaced by `user_data_root(data_root, option)`."""
    root = user_data_root(data_root, option, cfg.data.root)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))


# ---- a split's ground truth by id, for showing which hits are right --------------------------
def image_row(split: RetrievalSplit, image_id: str) -> int:
    """The row of `image_id` in the split; a DataError (one line) for an id it does not have."""
    for row, image in enumerate(split.images):
        if image.image_id == image_id:
            return row
    ids = [im.image_id for im in split.images]
    raise DataError(
        f"unknown image id {image_id!r}: the {split.name} split has {len(ids)} images, "
        f"{', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}"
    )


def relevant_images(split: RetrievalSplit, text: str) -> set[str]:
    """Ids of the images a text is true of, where it is one of the split's captions (else none)."""
    rows = {int(r) for j, c in enumerate(split.captions) if c.text == text for r in split.caption_relevant[j]}
    return {split.images[r].image_id for r in rows}


def relevant_captions(split: RetrievalSplit, image_id: str) -> set[str]:
    """Ids of the split's captions that are true of an image (the i2t ground truth)."""
    rows = split.image_captions()[image_row(split, image_id)]
    return {split.captions[int(j)].caption_id for j in rows}
