"""FAISS behind the ExactIndex interface (`add`, `len`, `dim`, `search`, `save`, `load`).

Inner product over float32 embeddings (cosine for L2-normalised ones). `flat` is exact;
`ivf` clusters the corpus into `nlist` lists (trained on the first corpus added) and searches
`nprobe` of them: approximate, much faster on large corpora. On a machine with faiss-gpu the
index moves to the GPU with `gpu=True`. faiss is optional: `pip install faiss-cpu`.

`load` refuses a file FAISS cannot read (cut, not an index) with one line (DataError). The search
API does not load FAISS files: it rebuilds its FAISS index from the embeddings of a saved index,
which are checked (retrerank.search_index).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from retrerank.data.errors import DataError

KINDS = ("flat", "ivf")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "FAISS indexes need the faiss package: pip install faiss-cpu (or faiss-gpu where CUDA is available)"
        ) from None
    return faiss


class FaissIndex:
    def __init__(
        self,
        kind: str = "flat",
        nlist: int = 1024,
        nprobe: int = 16,
        gpu: bool = False,
        embeddings: Tensor | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"FAISS index kind {kind!r}; choose from {list(KINDS)}")
        self.kind, self.nlist, self.nprobe, self.gpu = kind, nlist, nprobe, gpu
        self._index = None
        if embeddings is not None:
            self.add(embeddings)

    def _create(self, dim: int, sample: np.ndarray):
        faiss = _faiss()
        if self.kind == "flat":
            index = faiss.IndexFlatIP(dim)
        else:
            if len(sample) < self.nlist:
                raise ValueError(
                    f"an IVF index with nlist={self.nlist} needs at least that many embeddings to "
                    f"train on, got {len(sample)}: lower the nlist or use a flat index"
                )
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(sample)
            index.nprobe = self.nprobe
        if self.gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        return index

    def add(self, embeddings: Tensor) -> None:
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings must be [N, E], got shape {tuple(embeddings.shape)}")
        array = np.ascontiguousarray(embeddings.detach().float().cpu().numpy())
        if self._index is None:
            self._index = self._create(array.shape[1], array)
        elif array.shape[1] != self.dim:
            raise ValueError(f"embeddings have width {array.shape[1]}, the index holds width {self.dim}")
        self._index.add(array)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def dim(self) -> int | None:
        return None if self._index is None else int(self._index.d)

    def search(self, queries: Tensor, k: int, chunk_size: int = 0, query_chunk_size: int = 0) -> tuple[Tensor, Tensor]:
        """(scores [Q, k] float32, indices [Q, k] int64) on the CPU, best first. The chunk sizes of
        ExactIndex.search are accepted and ignored: FAISS bounds its own memory."""
        if self._index is None:
            raise ValueError("the index is empty")
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(queries.shape)}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must be between 1 and the number of indexed items ({len(self)})")
        scores, indices = self._index.search(np.ascontiguousarray(queries.detach().float().cpu().numpy()), k)
        return torch.from_numpy(scores), torch.from_numpy(indices.astype(np.int64))

    def save(self, path: str | Path) -> None:
        """faiss.write_index to a temporary file, then an atomic rename."""
        faiss, path = _faiss(), Path(path)
        if self._index is None:
            raise ValueError("the index is empty")
        index = faiss.index_gpu_to_cpu(self._index) if self.gpu else self._index
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(index, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, gpu: bool = False) -> FaissIndex:
        faiss, path = _faiss(), Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"index file not found: {path}")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise DataError(f"{path} is not a readable FAISS index: {str(err).splitlines()[0]}") from None
        ivf = hasattr(index, "nprobe")
        out = cls(
            "ivf" if ivf else "flat", nlist=getattr(index, "nlist", 1024), nprobe=getattr(index, "nprobe", 16), gpu=gpu
        )
        out._index = faiss.index_cpu_to_all_gpus(index) if gpu else index
        return out


def make_index(kind: str, embeddings: Tensor, nlist: int = 1024, nprobe: int = 16):
    """The index that evaluation and the search API use: "exact" (ExactIndex, chunked torch
    top-k on the embeddings' device) or "faiss_flat" / "faiss_ivf"."""
    from retrerank.retrieval.index import ExactIndex

    if kind == "exact":
        return ExactIndex(embeddings)
    if kind in ("faiss_flat", "faiss_ivf"):
        faiss = _faiss()  # embeddings on a GPU go to FAISS's GPUs where faiss-gpu is installed
        gpu = embeddings.is_cuda and hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0
        return FaissIndex(kind.removeprefix("faiss_"), nlist=nlist, nprobe=nprobe, gpu=gpu, embeddings=embeddings)
    raise ValueError(f"index kind {kind!r}; choose from ['exact', 'faiss_flat', 'faiss_ivf']")
