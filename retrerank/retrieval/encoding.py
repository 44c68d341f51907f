"""The pipeline's encoding part: bi-encoder embeddings and, for a late cross-encoder, the layer-m state cache.

`Encoding` is a mixin of `RetrieveRerank` (retrerank.retrieval.pipeline), which sets the
attributes declared below. Texts and images are embedded in batches of `batch_size`; with a
late-interaction cross-encoder each item's layer-m states are kept too (`StateCache`, in `state_dtype`:
float16 unless the pipeline says otherwise), from the same pass when the bi-encoder computes the same
lower blocks (`bi_encoder.shares_lower_layers(cross)`). Under data parallelism each rank encodes its block of
the items and the blocks are gathered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from retrerank.compile import CompiledInference
from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord
from retrerank.distributed import gather_rows, shard, world
from retrerank.retrieval.state_cache import StateCache
from retrerank.torch_utils import device_of, inference, to_device

T = TypeVar("T")


class Encoding:
    """Embeddings and layer-m states of texts and images (a part of RetrieveRerank)."""

    bi_encoder: nn.Module
    cross_encoder: nn.Module | None
    batch_size: int
    progress: bool
    image_states: StateCache | None  # the indexed images' states (late interaction only)
    text_states: StateCache | None
    state_dtype: torch.dtype = torch.float16  # of the layer-m state cache: half the memory of float32
    compiled: CompiledInference | None = None  # eval.compile: every encoder call below goes through it

    def _call(self, model: nn.Module, method: str, *inputs: Any) -> Any:
        """model.method(*inputs): eagerly, or compiled on bucketed input shapes (retrerank.compile)."""
        if self.compiled is None:
            return getattr(model, method)(*inputs)
        return self.compiled(model, method, *inputs)

    def embed_images(self, images: Sequence[ImageRecord]) -> Tensor:
        """Bi-encoder embeddings [N, E] on the encoder's device, in batches of batch_size."""
        device = device_of(self.bi_encoder)
        with inference(self.bi_encoder):
            parts = [
                self._call(self.bi_encoder, "embed_images", to_device(self._collate(batch), device))
                for batch in self._batches(images, self.batch_size, "embed images")
            ]
        return _cat(parts, "images")

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Rows in the order of `texts`. The texts are batched longest first (as sentence-transformers'
        encode does), so that each batch pads to nearly its own length instead of its longest caption's."""
        device = device_of(self.bi_encoder)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with inference(self.bi_encoder):
            parts = [
                self._call(self.bi_encoder, "embed_texts", to_device(self.bi_encoder.tokenize(list(batch)), device))
                for batch in self._batches([texts[i] for i in order], self.batch_size, "embed texts")
            ]
        rows = _cat(parts, "texts")
        out = torch.empty_like(rows)
        out[torch.tensor(order, dtype=torch.long)] = rows
        return out

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
            return torch.empty(0, 0), (
                StateCache(self.cross_encoder.join_layer, self.state_dtype) if self._late() else None
            )
        if not self._late():
            return (self.embed_images(items) if images else self.embed_texts(items)), None
        bi, cross = self.bi_encoder, self.cross_encoder
        m, shared = cross.join_layer, bi.shares_lower_layers(cross)
        cache, parts, device = StateCache(m, self.state_dtype), [], device_of(bi)
        with inference(bi, cross):
            for batch in self._batches(items, self.batch_size, f"embed {kind}"):
                inputs = to_device(self._collate(batch) if images else bi.tokenize(list(batch)), device)
                if shared:  # one run of blocks [0, m) for both encoders
                    lower = self._call(bi, "images_lower" if images else "texts_lower", inputs, m)
                    parts.append(self._call(bi, "embed_lower", lower, m, kind))
                else:
                    parts.append(self._call(bi, "embed_images" if images else "embed_texts", inputs))
                    lower = self._call(cross, "lower_image" if images else "lower_text", inputs)
                cache.add(*lower)
        return _cat(parts, kind), cache

    def _cross_states(self, items: Sequence, kind: str) -> StateCache:
        """Layer-m states of texts or images from the cross-encoder alone (no embeddings)."""
        cross, cache = self.cross_encoder, StateCache(self.cross_encoder.join_layer, self.state_dtype)
        device = device_of(cross)
        with inference(cross):
            for batch in self._batches(items, self.batch_size, f"lower states of {kind}"):
                if kind == "images":
                    cache.add(*self._call(cross, "lower_image", to_device(self._collate(batch), device)))
                else:
                    cache.add(*self._call(cross, "lower_text", to_device(cross.tokenize(list(batch)), device)))
        return cache

    def _corpus_states(self, kind: str) -> StateCache:
        """The indexed corpus's states ("image" or "text"), checked against the current join layer."""
        cache = self.image_states if kind == "image" else self.text_states
        m = self.cross_encoder.join_layer
        if cache is None or cache.join_layer != m:
            raise ValueError(f"the indexed {kind}s have no cached states for join layer {m}: index them again")
        return cache

    def _batches(self, items: Sequence[T], size: int, desc: str) -> Iterator[Sequence[T]]:
        starts = range(0, len(items), size)
        for start in tqdm(starts, desc=desc, disable=not self.progress, leave=False):
            yield items[start : start + size]


def _cat(parts: list[Tensor], what: str) -> Tensor:
    if not parts:
        raise ValueError(f"no {what} to embed")
    return torch.cat(parts).float()
