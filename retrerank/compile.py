"""`torch.compile` for inference (eval.compile), with input shapes in a few buckets so that it
compiles a few graphs, not one per batch.

The retrieval pipeline (retrerank.retrieval.encoding, .scoring) runs every encoder call through
`CompiledInference.__call__(model, method, *inputs)` when compiling: `getattr(model, method)`
(e.g. the bi-encoder's `embed_texts`) is compiled once per (model, method) and called with its
inputs padded:

- token batches (`input_ids` + `attention_mask`): the length is padded up to its bucket
  (`bucket`: 16, 32, 48, 64, then powers of two), capped at the backbone's `max_text_len`; new
  positions are the tokenizer's pad id with a false mask;
- region batches (`features`, `boxes`, `region_mask`): the region count likewise, capped at the
  backbone's `max_regions`; new regions are zeros with a false mask;
- rows: the batch dimension is marked dynamic, so one graph serves every batch size (the last
  partial batch costs no recompilation and no padded rows); a batch of one row gets a copy of
  it, as dynamo would otherwise give size 1 a graph of its own;
- (hidden, mask) states, e.g. from the pipeline's state cache, are passed with their own lengths.

Graphs are compiled with dynamo's automatic dynamic shapes (`dynamic=None`): a length that
changes between calls (a second bucket; the lengths of cached states, which a late cross-encoder
trims per batch itself) is made dynamic at its first recompilation, so each compiled frame has a
few graphs however many batches run. Buckets keep the shapes seen few in the first place: they
matter for static-shape modes (CUDA graphs, `mode="reduce-overhead"`, record one graph per shape).
An adapter set switched inside a method is a guard of its graph (a bi- and a cross-encoder set
compile apart). Where dynamo cannot trace a whole method it compiles the functions it calls.

Padding changes no result: every padded position is masked (the backbones mask attention and
pooling by it) and each row is computed on its own, so outputs are cut back to the real rows and
returned states keep their masked padding (the state cache and pooling drop it). Pixel inputs
have no length to bucket.

Compiling costs seconds per graph on a CPU (inductor runs a C++ compiler), repaid only over a long
evaluation; on a GPU it fuses the small kernels that bound inference at small batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
REGION_KEYS = ("features", "boxes", "region_mask")
SMALL_STEP = 16  # buckets are multiples of this up to SMALL_MAX, then powers of two
SMALL_MAX = 64


def bucket(n: int, cap: int | None = None) -> int:
    """The padded length of a length-n batch: the next of 16, 32, 48, 64, 128, 256, ... at or above n,
    but at most `cap` (the model's maximum length) when n itself is not above it."""
    size = max(SMALL_STEP, -(-n // SMALL_STEP) * SMALL_STEP) if n <= SMALL_MAX else 1 << (n - 1).bit_length()
    if cap is None:
        return size
    return min(size, cap) if n <= cap else n  # longer than the model takes: left as it is


class CompiledInference:
    """Compiled encoder methods and the input padding they are called with (see the module docstring).

    backend / mode: torch.compile's (inductor by default; tests may use "aot_eager", which traces
    and checks graphs without generating code).
    """

    def __init__(self, backend: str = "inductor", mode: str | None = None):
        self.backend, self.mode = backend, mode
        self._compiled: dict[tuple[int, str], Callable] = {}  # the model is kept alive by its bound method

    def __call__(self, model: nn.Module, method: str, *inputs: Any) -> Any:
        """getattr(model, method)(*inputs), compiled, on bucketed inputs (see the module docstring)."""
        rows = _rows(inputs)
        if rows is None:  # nothing batch-first to pad (not a call the pipeline makes): run it eagerly
            return getattr(model, method)(*inputs)
        padded_rows = max(rows, 2)
        inputs = tuple(self._pad(model, value, padded_rows) for value in inputs)
        fn = self._compiled.get((id(model), method))
        if fn is None:
            fn = torch.compile(getattr(model, method), backend=self.backend, mode=self.mode, dynamic=None)
            self._compiled[(id(model), method)] = fn
        return _cut_rows(fn(*inputs), rows, padded_rows)

    def _pad(self, model: nn.Module, value: Any, rows: int) -> Any:
        if isinstance(value, Tensor):
            return _mark_rows(_pad_rows(value, rows))
        if isinstance(value, tuple):  # (hidden, mask) states
            return tuple(self._pad(model, v, rows) for v in value)
        if isinstance(value, dict):
            backbone = getattr(model, "backbone", model)
            if "attention_mask" in value and "input_ids" in value:
                pad_id = getattr(getattr(backbone, "tokenizer", None), "pad_token_id", None) or 0
                value = _pad_length(
                    value, TEXT_KEYS, "attention_mask", getattr(backbone, "max_text_len", None), {"input_ids": pad_id}
                )
            elif "region_mask" in value:
                value = _pad_length(value, REGION_KEYS, "region_mask", getattr(backbone, "max_regions", None), {})
            return {key: self._pad(model, v, rows) for key, v in value.items()}
        return value


def _rows(inputs: tuple) -> int | None:
    """The batch size: dim 0 of the first tensor among the inputs (dicts and tuples searched)."""
    for value in inputs:
        if isinstance(value, Tensor) and value.dim():
            return value.shape[0]
        if isinstance(value, (dict, tuple)):
            found = _rows(tuple(value.values()) if isinstance(value, dict) else value)
            if found is not None:
                return found
    return None


def _pad_length(
    batch: dict[str, Tensor], keys: tuple[str, ...], mask_key: str, cap: int | None, fill: dict[str, int]
) -> dict[str, Tensor]:
    """The batch with dim 1 of `keys` padded to the bucket of its length (mask false there)."""
    length = batch[mask_key].shape[1]
    target = bucket(length, cap)
    if target == length:
        return batch
    out = dict(batch)
    for key in keys:
        value = batch.get(key)
        if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[1] == length:
            shape = (value.shape[0], target - length, *value.shape[2:])
            extra = value.new_full(shape, fill.get(key, 0))
            out[key] = torch.cat([value, extra], dim=1)
    return out


def _pad_rows(value: Tensor, rows: int) -> Tensor:
    if not value.dim() or value.shape[0] >= rows:
        return value
    return torch.cat([value, value[-1:].expand(rows - value.shape[0], *value.shape[1:])])


def _mark_rows(value: Tensor) -> Tensor:
    if value.dim():
        torch._dynamo.maybe_mark_dynamic(value, 0)
    return value


def _cut_rows(out: Any, rows: int, padded: int) -> Any:
    if rows == padded:
        return out
    if isinstance(out, Tensor):
        return out[:rows] if out.dim() and out.shape[0] == padded else out
    if isinstance(out, tuple):
        return tuple(_cut_rows(value, rows, padded) for value in out)
    return out
