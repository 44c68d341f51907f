"""Exact inner-product search over a corpus of embeddings, in bounded memory.

With L2-normalised embeddings the inner product is the cosine similarity. The search
never builds a full queries x corpus matrix: it walks the corpus in chunks, keeps a
running top-k per query and merges each chunk's best into it.

On a CPU, where faiss is installed (faiss-cpu, in the dev extra), the search is FAISS's exact
`knn` on the same float32 rows, read in place (no copy of the corpus): a blocked matrix product
with a per-query heap, where the torch path runs `topk` over each chunk's scores afterwards
(docs/benchmarks.md, "Beside the peers"). The contract stays this module's: equal scores are
ordered by lower corpus index (FAISS is asked for k + 1, and the rows with a tie at the k-th place
are searched again here). `use_faiss=False` keeps torch; on a GPU it is always torch.

`ExactIndex.save` / `load` keep the embeddings alone (torch's weights-only format, no code). A file
that is cut, not a saved ExactIndex, or whose embeddings are not [N, E] floats, hold NaN or inf, or
have an all-zero row (a row never encoded) is refused with one line (DataError): such rows would be
searched and return NaN or meaningless scores. The file has no ids, so it cannot be checked against
a corpus; the Searcher's saved index (retrerank.search_index) records ids, shapes and a SHA-256.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from retrerank.data.errors import DataError

try:  # optional: the faster exact search on CPUs (module docstring)
    import faiss as _faiss
except ImportError:
    _faiss = None


class ExactIndex:
    """Corpus embeddings [N, E] (float32, on whatever device they were added on; the first tensor
    added is kept as it is, not copied)."""

    def __init__(self, embeddings: Tensor | None = None, use_faiss: bool = True) -> None:
        self._embeddings: Tensor | None = None
        self.use_faiss = use_faiss  # on a CPU, where faiss is installed (module docstring)
        if embeddings is not None:
            self.add(embeddings)

    def add(self, embeddings: Tensor) -> None:
        """Append rows to the corpus; their positions continue the existing numbering."""
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must be [N, E], got shape {tuple(embeddings.shape)}")
        embeddings = embeddings.detach().float()
        if self._embeddings is None:
            # kept without a copy (a corpus can be most of the memory): do not modify it in place
            self._embeddings = embeddings
            return
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings have width {embeddings.shape[1]}, the index holds width {self.dim}")
        self._embeddings = torch.cat([self._embeddings, embeddings.to(self._embeddings.device)])

    def __len__(self) -> int:
        return 0 if self._embeddings is None else self._embeddings.shape[0]

    @property
    def dim(self) -> int | None:
        return None if self._embeddings is None else self._embeddings.shape[1]

    @property
    def embeddings(self) -> Tensor:
        if self._embeddings is None:
            raise ValueError("the index is empty")
        return self._embeddings

    def to(self, device: torch.device | str) -> ExactIndex:
        if self._embeddings is not None:
            self._embeddings = self._embeddings.to(device)
        return self

    @torch.no_grad()
    def search(
        self, queries: Tensor, k: int, chunk_size: int = 4096, query_chunk_size: int = 1024
    ) -> tuple[Tensor, Tensor]:
        """Top-k corpus rows by inner product for each query.

        Returns (scores [Q, k] float32, indices [Q, k] int64) on the index's device, best
        first; equal scores are ordered by lower corpus index, so results are deterministic.
        At most a (query_chunk_size x chunk_size) score matrix exists at any time.
        """
        corpus = self.embeddings
        if queries.dim() != 2 or queries.shape[1] != corpus.shape[1]:
            raise ValueError(f"queries must be [Q, {corpus.shape[1]}], got shape {tuple(queries.shape)}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must be between 1 and the number of indexed items ({len(self)})")
        if chunk_size < 1 or query_chunk_size < 1:
            raise ValueError("chunk_size and query_chunk_size must be >= 1")
        queries = queries.detach().to(device=corpus.device, dtype=torch.float32)
        if self.use_faiss and _faiss is not None and corpus.device.type == "cpu" and len(queries):
            return self._search_faiss(queries, k, chunk_size, query_chunk_size)
        return self._search_torch(queries, k, chunk_size, query_chunk_size)

    def _search_torch(self, queries: Tensor, k: int, chunk_size: int, query_chunk_size: int) -> tuple[Tensor, Tensor]:
        corpus = self.embeddings
        all_scores, all_indices = [], []
        for q_start in range(0, queries.shape[0], query_chunk_size):
            q = queries[q_start : q_start + query_chunk_size]
            # each chunk's best k are kept side by side and reduced to k only when they pile up:
            # one sort per many chunks instead of one per chunk
            kept_scores, kept_indices, width = [], [], 0
            for c_start in range(0, len(self), chunk_size):
                scores = q @ corpus[c_start : c_start + chunk_size].T
                chunk_scores, positions = _topk_lower_index_first(scores, k)
                kept_scores.append(chunk_scores)
                kept_indices.append(positions + c_start)
                width += chunk_scores.shape[1]
                if width >= max(4 * k, chunk_size) and len(kept_scores) > 1:
                    best_scores, best_indices = _best(kept_scores, kept_indices, k)
                    kept_scores, kept_indices, width = [best_scores], [best_indices], best_scores.shape[1]
            best_scores, best_indices = _best(kept_scores, kept_indices, k)
            all_scores.append(best_scores)
            all_indices.append(best_indices)
        if not all_scores:  # no queries
            return torch.empty(0, k, device=corpus.device), torch.empty(0, k, dtype=torch.long, device=corpus.device)
        return torch.cat(all_scores), torch.cat(all_indices)

    def _search_faiss(self, queries: Tensor, k: int, chunk_size: int, query_chunk_size: int) -> tuple[Tensor, Tensor]:
        corpus = self.embeddings.contiguous()  # a no-op for the rows `add` keeps
        _faiss.omp_set_num_threads(torch.get_num_threads())
        asked = min(k + 1, len(corpus))  # the (k+1)-th shows a tie at the k-th place
        found_scores, found = _faiss.knn(
            queries.contiguous().numpy(), corpus.numpy(), asked, metric=_faiss.METRIC_INNER_PRODUCT
        )
        scores, indices = torch.from_numpy(found_scores), torch.from_numpy(found)
        tied = scores[:, k - 1] == scores[:, k] if asked > k else torch.zeros(len(scores), dtype=torch.bool)
        scores, indices = _by_score_then_index(scores[:, :k], indices[:, :k])
        if tied.any():  # which of the equal rows make the top k is this module's rule, not FAISS's
            rows = tied.nonzero().squeeze(1)
            scores[rows], indices[rows] = self._search_torch(queries[rows], k, chunk_size, query_chunk_size)
        return scores, indices

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a half-written index behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        embeddings = None if self._embeddings is None else self._embeddings.cpu()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": "retrerank.ExactIndex", "version": 1, "embeddings": embeddings}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, map_location: torch.device | str = "cpu") -> ExactIndex:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"index file not found: {path}")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DataError(f"{path} is not a readable saved ExactIndex (cut or damaged?): {first}") from None
        if not isinstance(state, dict) or state.get("format") != "retrerank.ExactIndex":
            raise DataError(f"{path} is not a saved ExactIndex")
        embeddings = state.get("embeddings")
        problem = embedding_problem(embeddings)
        if problem:
            raise DataError(f"{path}: embeddings {problem}")
        return cls(embeddings)


def embedding_problem(embeddings: object, describe=lambda row: f"row {row}") -> str | None:
    """Why `embeddings` cannot be searched (not [N, E] floats, NaN or inf, an all-zero row), or None;
    `describe(row)` names a bad row in the message."""
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or not embeddings.is_floating_point():
        shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        return f"are not [rows, width] floats ({shape})"
    for bad, what in (
        (~torch.isfinite(embeddings).all(dim=1), "holds NaN or inf"),
        ((embeddings == 0).all(dim=1), "is all zeros"),
    ):
        rows = bad.nonzero().flatten().tolist()
        if rows:
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            return f"{describe(rows[0])} {what}{more}"
    return None


def _topk_lower_index_first(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """torch.topk over the columns, but with ties at the k-th place resolved by lower column.

    topk alone picks arbitrarily among values equal to the k-th best (duplicate captions
    or images make such ties real). Asking for k + 1 shows such a tie without another pass
    over the scores (the (k+1)-th equals the k-th), and only those rows are redone with a
    stable sort, which keeps equal values in column order.
    """
    k = min(k, scores.shape[1])
    values, positions = scores.topk(min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] == k:  # the chunk has no more than k columns: no column is left out
        return values, positions
    tied = values[:, k - 1] == values[:, k]
    values, positions = values[:, :k].contiguous(), positions[:, :k].contiguous()
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        sorted_values, sorted_positions = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], positions[rows] = sorted_values[:, :k], sorted_positions[:, :k]
    return values, positions


def _best(scores: list[Tensor], indices: list[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """Best k of the candidates of several chunks, ordered by (score descending, index ascending)."""
    scores, indices = _by_score_then_index(torch.cat(scores, 1), torch.cat(indices, 1))
    return scores[:, :k].contiguous(), indices[:, :k].contiguous()


def _by_score_then_index(scores: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's candidates ordered by (score descending, index ascending)."""
    # Order by index first, then a stable sort by score keeps equal scores in index order.
    by_index = indices.argsort(dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    return scores.gather(1, by_score), indices.gather(1, by_score)
