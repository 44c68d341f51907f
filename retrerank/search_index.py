"""A Searcher's built index as a folder: what `Searcher.save_index` writes and `Searcher.load_index` reads.

    <folder>/index.json           ids, caption texts, the model's fingerprint, the checkpoint it came from,
                                  the SHA-256 of tensors.safetensors and the shape of each tensor in it
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

Integrity: the fingerprint covers index.json's model, not the tensors, so index.json also records
the SHA-256 of tensors.safetensors and the shape of every tensor in it (the safetensors format has no
checksum of its own). A load checks, in this order, and refuses with one line naming the file
(IndexIntegrityError) at the first that fails:

- index.json has every key, of the right type, and its ids agree with the shapes it records (one
  embedding row per id, one caption text per caption id) and with the tensors a corpus needs;
- the tensor file is readable safetensors (not cut, no garbage header) whose shapes equal the
  recorded ones: rows dropped or added name the tensor and both shapes;
- the file's SHA-256 equals the recorded one: another model's tensors copied in, or bytes damaged
  on disk, which leave the shapes as they were;
- every embedding row is finite and not all zeros (a model that produced NaN, or a row never
  encoded: either would be searched and return NaN or meaningless scores), the late-interaction
  offsets split their states, and the image records' counts add up to their tensors.

The same embedding check runs when an index is saved, so a model that produced NaN embeddings fails
at `save_index`, not at a later load.

An index saved in format version 1 records no checksum, and is refused with a line saying to index
the corpus again, rather than loaded with the checksum skipped: the checksum is the only check that
sees another model's tensors of the same shapes (the silent failure this format exists to prevent),
and rebuilding costs one encoding pass with the model at hand, the index being a cache of that pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from retrerank.data.records import ImageRecord
from retrerank.errors import UserInputError
from retrerank.retrieval.index import embedding_problem
from retrerank.retrieval.state_cache import StateCache

FORMAT, VERSION = "retrerank.SearchIndex", 2
UNCHECKED_VERSIONS = (1,)  # formats that record no checksum of the tensor file: refused (module docstring)
META, TENSORS = "index.json", "tensors.safetensors"
CORPORA = (("image", "images"), ("caption", "captions"))  # (tensor prefix, index.json section)
RECORDS = ("image_features", "image_boxes", "image_regions", "image_pixel_shapes", "image_pixels")
REBUILD = "index the corpus again with this model"


class SearchIndexError(UserInputError):
    """A saved index that this searcher cannot use (another model's, or not an index)."""


class IndexIntegrityError(SearchIndexError):
    """A saved index whose files disagree with each other or with the checksum and shapes it records:
    changed, cut or damaged after it was saved."""


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
    half-written index. An existing index folder is replaced; any other existing path is refused, and
    so are non-finite or all-zero embeddings. index.json gets the tensor file's SHA-256 and shapes."""
    folder = Path(folder)
    if folder.exists() and not (folder / META).is_file():
        raise SearchIndexError(f"{folder} exists and is not a saved search index: refusing to replace it")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    problem = _bad_embeddings(meta, tensors)
    if problem:
        raise IndexIntegrityError(f"refusing to save the index {folder}: {problem}")
    data = safetensors_bytes(tensors)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "tensors": {
            "sha256": hashlib.sha256(data).hexdigest(),
            "shapes": {key: list(t.shape) for key, t in tensors.items()},
        },
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        (tmp / TENSORS).write_bytes(data)
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
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
    """(index.json, tensors on `device`), after checking that the folder is an index of this model and
    that its files are whole and agree with each other (the checks: module docstring)."""
    folder = Path(folder)
    meta_path, tensors_path = folder / META, folder / TENSORS
    if not meta_path.is_file() or not tensors_path.is_file():
        raise SearchIndexError(f"{folder} is not a saved search index (no {META} and {TENSORS})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SearchIndexError(f"{meta_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SearchIndexError(f"{meta_path} is not a {FORMAT} file")
    if meta.get("version") in UNCHECKED_VERSIONS:
        raise SearchIndexError(
            f"{folder} is a search index of format version {meta['version']}, which records no checksum of its "
            f"tensors, so they cannot be verified; {REBUILD} and save it"
        )
    if meta.get("version") != VERSION:
        raise SearchIndexError(
            f"{meta_path} is a {FORMAT} file of version {meta.get('version')}; this code reads {VERSION}"
        )
    if meta.get("fingerprint") != expected_fingerprint:
        raise SearchIndexError(
            f"the index in {folder} was built by another model (from checkpoint {meta.get('checkpoint')}, "
            f"fingerprint {str(meta.get('fingerprint'))[:12]}, this model's is {expected_fingerprint[:12]}): "
            "index the corpus again with this model"
        )
    shapes = _check_meta(meta_path, meta)
    try:
        with safe_open(str(tensors_path), framework="pt", device="cpu") as f:
            found = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise IndexIntegrityError(
            f"{tensors_path} is not a readable safetensors file (cut or damaged?): {_first_line(err)}; {REBUILD}"
        ) from None
    if set(found) != set(shapes):
        raise IndexIntegrityError(
            f"{tensors_path} holds the tensors {sorted(found)}, but {meta_path} records {sorted(shapes)}: "
            f"the file was replaced; {REBUILD}"
        )
    for key, shape in shapes.items():
        if found[key] != shape:
            raise IndexIntegrityError(
                f"{tensors_path} holds {key} of shape {found[key]}, but {meta_path} records {shape}: "
                f"the file was cut or replaced; {REBUILD}"
            )
    with open(tensors_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    recorded = meta["tensors"]["sha256"]
    if digest != recorded:
        raise IndexIntegrityError(
            f"{tensors_path} does not match the SHA-256 that {meta_path} records (file {digest[:12]}, recorded "
            f"{recorded[:12]}): it was changed or replaced after the index was saved; {REBUILD}"
        )
    try:
        with safe_open(str(tensors_path), framework="pt", device=str(device)) as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise IndexIntegrityError(f"{tensors_path} cannot be read: {_first_line(err)}; {REBUILD}") from None
    problem = _bad_embeddings(meta, tensors) or _bad_states(tensors) or _bad_records(tensors)
    if problem:
        raise IndexIntegrityError(f"{tensors_path}: {problem}; {REBUILD}")
    return meta, tensors


# ---- the checks ---------------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _layer(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _shapes(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        for shape in value.values()
    )


def _sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


# index.json key -> (test, what it must be)
FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "images.ids": (_strings, "a list of strings"),
    "images.records": (lambda v: isinstance(v, bool), "true or false"),
    "images.join_layer": (_layer, "a layer number or null"),
    "captions.ids": (_strings, "a list of strings"),
    "captions.texts": (_strings, "a list of strings"),
    "captions.join_layer": (_layer, "a layer number or null"),
    "tensors.sha256": (_sha256, "a SHA-256 in hexadecimal"),
    "tensors.shapes": (_shapes, "a table of tensor shapes"),
}


def _check_meta(path: Path, meta: dict) -> dict[str, list[int]]:
    """The tensor shapes index.json records, after checking its keys, their types, and that its ids
    agree with those shapes; an IndexIntegrityError naming the key otherwise."""
    for key, (test, what) in FIELDS.items():
        value, parts = meta, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(value, dict) or part not in value:
                raise IndexIntegrityError(f"{path} has no key {'.'.join(parts[: i + 1])!r}: it is damaged; {REBUILD}")
            value = value[part]
        if not test(value):
            raise IndexIntegrityError(f"{path}: {key!r} must be {what}, not {type(value).__name__}; {REBUILD}")
    captions = meta["captions"]
    if len(captions["texts"]) != len(captions["ids"]):
        raise IndexIntegrityError(
            f"{path} lists {len(captions['ids'])} caption ids but {len(captions['texts'])} caption texts; {REBUILD}"
        )
    shapes = meta["tensors"]["shapes"]
    expected: dict[str, tuple[int | None, str]] = {}  # tensor -> (rows it must have, None: any; why)
    for prefix, section in CORPORA:
        n = len(meta[section]["ids"])
        if not n:
            continue
        expected[f"{prefix}_embeddings"] = (n, "one row per id")
        if meta[section]["join_layer"] is not None:
            expected[f"{prefix}_state_offsets"] = (n + 1, "one row per id, and one more")
            expected[f"{prefix}_states"] = (None, "")
    if meta["images"]["ids"] and meta["images"]["records"]:
        n = len(meta["images"]["ids"])
        expected |= {key: (None, "") for key in RECORDS}
        expected |= {"image_regions": (n, "one row per id"), "image_pixel_shapes": (n, "one row per id")}
    if set(shapes) != set(expected):
        raise IndexIntegrityError(
            f"{path} records the tensors {sorted(shapes)}, but its ids and settings need {sorted(expected)}; {REBUILD}"
        )
    for key, (rows, why) in expected.items():
        if rows is not None and (not shapes[key] or shapes[key][0] != rows):
            prefix = key.split("_")[0]
            section = dict(CORPORA)[prefix]
            raise IndexIntegrityError(
                f"{path} lists {len(meta[section]['ids'])} {prefix} ids but records {key} of shape "
                f"{shapes[key]} ({why}); {REBUILD}"
            )
    embeddings = [shapes[f"{prefix}_embeddings"] for prefix, _ in CORPORA if f"{prefix}_embeddings" in shapes]
    if any(len(shape) != 2 for shape in embeddings) or len({shape[1] for shape in embeddings}) > 1:
        raise IndexIntegrityError(
            f"{path} records embeddings of shapes {embeddings}: they must be [rows, width], of one width; {REBUILD}"
        )
    return shapes


def _bad_embeddings(meta: dict, tensors: dict[str, Tensor]) -> str | None:
    """What is wrong with the embeddings (a row with NaN or inf, or all zeros), or None."""
    for prefix, section in CORPORA:
        key = f"{prefix}_embeddings"
        if key not in tensors:
            continue
        ids = (meta.get(section) or {}).get("ids") or []
        problem = embedding_problem(tensors[key], functools.partial(_describe_row, prefix, ids))
        if problem:
            return f"{key} {problem}"
    return None


def _describe_row(prefix: str, ids: list[str], row: int) -> str:
    return f"row {row} ({prefix} id {ids[row]!r})" if row < len(ids) else f"row {row}"


def _bad_states(tensors: dict[str, Tensor]) -> str | None:
    """What is wrong with the late-interaction states (offsets that do not split them, NaN), or None."""
    for prefix, _ in CORPORA:
        if f"{prefix}_states" not in tensors:
            continue
        states, offsets = tensors[f"{prefix}_states"], tensors[f"{prefix}_state_offsets"].cpu()
        rows = states.shape[0] if states.dim() else -1
        if offsets.dim() != 1 or offsets[0] != 0 or offsets[-1] != rows or (offsets.diff() < 0).any():
            return (
                f"{prefix}_state_offsets do not split the {rows} {prefix}_states rows "
                f"(they must start at 0, never decrease and end at {rows})"
            )
        if states.is_floating_point() and not torch.isfinite(states).all():
            return f"{prefix}_states hold NaN or inf"
    return None


def _bad_records(tensors: dict[str, Tensor]) -> str | None:
    """What is wrong with the image records (counts that do not add up to their tensors, NaN), or None."""
    if "image_regions" not in tensors:
        return None
    regions, shapes = tensors["image_regions"].cpu(), tensors["image_pixel_shapes"].cpu()
    features, boxes, pixels = tensors["image_features"], tensors["image_boxes"], tensors["image_pixels"]
    total = int(regions.sum())
    if (regions < 0).any() or features.dim() != 2 or features.shape[0] != total or boxes.shape != (total, 4):
        return (
            f"image_regions add up to {total} regions, but image_features has shape {list(features.shape)} and "
            f"image_boxes {list(boxes.shape)}"
        )
    if shapes.dim() != 2 or (shapes < 0).any() or int(shapes.prod(dim=1).sum()) != pixels.numel():
        return f"image_pixel_shapes do not add up to the {pixels.numel()} values of image_pixels"
    if not (torch.isfinite(features).all() and torch.isfinite(boxes).all()):
        return "image_features or image_boxes hold NaN or inf"
    return None


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
