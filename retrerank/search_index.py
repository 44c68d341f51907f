"""A Searcher's built index as a folder: what `Searcher.save_index` writes and `Searcher.load_index` reads.

    <folder>/index.json           ids, caption texts, the model's fingerprint, the checkpoint it came from
    <folder>/tensors.safetensors  embeddings, late-interaction layer-m states, image records where needed

Only JSON and safetensors: a saved index is data, never unpickled. It holds exactly what search
(reranking included) reads after `index_images` / `index_captions`, so results after a load equal
those before the save:

- the bi-encoder embeddings of both corpora (the exact or FAISS index is rebuilt from them);
- the caption texts (a full-attention cross-encoder reads them when it reranks captions);
- with a late-interaction cross-encoder, the corpora's cached layer-m states (`StateCache`), which
  is all its reranking reads; the image records are then not stored (a corpus can be gigabytes of
  region features), so such an index cannot be re-encoded at another join layer;
- with a full-attention cross-encoder, the image records (region features, boxes, pixels), since
  it reranks from them.

The fingerprint (SHA-256 of the model's weights and of the model settings that are not weights)
ties the index to its model: one built by another model is refused with one line, not searched
with embeddings from another space.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from retrerank.data.records import ImageRecord
from retrerank.errors import UserInputError
from retrerank.retrieval.state_cache import StateCache

FORMAT, VERSION = "retrerank.SearchIndex", 1
META, TENSORS = "index.json", "tensors.safetensors"


class SearchIndexError(UserInputError):
    """A saved index that this searcher cannot use (another model's, or not an index)."""


def fingerprint(system) -> str:
    """SHA-256 of every weight of `system` and of its model/adapter settings, less the backbone's
    name: the weights already say which backbone it is, and a moved backbone folder is the same model."""
    digest = hashlib.sha256()
    config = dict(getattr(system, "hparams", {}).get("config") or {})
    settings = {key: config.get(key) for key in ("model", "adapters")}
    if isinstance(settings["model"], dict):
        settings["model"] = {k: v for k, v in settings["model"].items() if k != "backbone"}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in system.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def write_index(folder: str | Path, meta: dict, tensors: dict[str, Tensor]) -> Path:
    """Both files into a fresh folder beside `folder`, then one rename: a crash never leaves a
    half-written index. An existing index folder is replaced; any other existing path is refused."""
    folder = Path(folder)
    if folder.exists() and not (folder / META).is_file():
        raise SearchIndexError(f"{folder} exists and is not a saved search index: refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        (tmp / TENSORS).write_bytes(safetensors_bytes(tensors))
        (tmp / META).write_text(json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=1) + "\n")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_index(
    folder: str | Path, expected_fingerprint: str, device: torch.device | str = "cpu"
) -> tuple[dict, dict[str, Tensor]]:
    """(index.json, tensors on `device`), after checking that the folder is an index of this model."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        raise SearchIndexError(f"{folder} is not a saved search index (no {META} and {TENSORS})")
    try:
        meta = json.loads((folder / META).read_text())
    except json.JSONDecodeError as err:
        raise SearchIndexError(f"{folder / META} is not valid JSON ({err})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SearchIndexError(f"{folder / META} is not a {FORMAT} version {VERSION} file")
    if meta.get("fingerprint") != expected_fingerprint:
        raise SearchIndexError(
            f"the index in {folder} was built by another model (from checkpoint {meta.get('checkpoint')}, "
            f"fingerprint {str(meta.get('fingerprint'))[:12]}, this model's is {expected_fingerprint[:12]}): "
            "index the corpus again with this model"
        )
    with safe_open(str(folder / TENSORS), framework="pt", device=str(device)) as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return meta, tensors


def cache_tensors(prefix: str, cache: StateCache | None) -> dict[str, Tensor]:
    if cache is None:
        return {}
    states, offsets = cache.flat()
    return {f"{prefix}_states": states, f"{prefix}_state_offsets": offsets}


def cache_from(prefix: str, tensors: dict[str, Tensor], join_layer: int | None) -> StateCache | None:
    if join_layer is None:
        return None
    offsets = tensors[f"{prefix}_state_offsets"].cpu()
    return StateCache.from_flat(join_layer, tensors[f"{prefix}_states"], offsets.diff())


def records_tensors(images: list[ImageRecord]) -> dict[str, Tensor]:
    """Region features and boxes back to back (with each image's region count) and the pictures
    flattened (with each one's shape; 0 x 0 x 0 for an image without pixels)."""
    regions = torch.tensor([len(im.features) for im in images], dtype=torch.long)
    shapes = torch.tensor(
        [im.pixels.shape if im.pixels is not None else (0, 0, 0) for im in images], dtype=torch.long
    ).reshape(len(images), 3)
    pixels = [im.pixels.reshape(-1) for im in images if im.pixels is not None]
    return {
        "image_features": torch.from_numpy(np.concatenate([im.features for im in images]).astype(np.float32)),
        "image_boxes": torch.from_numpy(np.concatenate([im.boxes for im in images]).astype(np.float32)),
        "image_regions": regions,
        "image_pixel_shapes": shapes,
        "image_pixels": torch.from_numpy(np.concatenate(pixels) if pixels else np.zeros(0, np.uint8)),
    }


def records_from(ids: list[str], tensors: dict[str, Tensor]) -> list[ImageRecord]:
    features, boxes = tensors["image_features"].cpu().numpy(), tensors["image_boxes"].cpu().numpy()
    region_ends = tensors["image_regions"].cpu().cumsum(0).tolist()
    shapes = tensors["image_pixel_shapes"].cpu().tolist()
    pixels, pixel_start, region_start, out = tensors["image_pixels"].cpu().numpy(), 0, 0, []
    for image_id, region_end, shape in zip(ids, region_ends, shapes):
        size = int(np.prod(shape))
        picture = pixels[pixel_start : pixel_start + size].reshape(shape) if size else None
        out.append(ImageRecord(image_id, features[region_start:region_end], boxes[region_start:region_end], picture))
        region_start, pixel_start = region_end, pixel_start + size
    return out
