"""Region features from detector outputs into a RegionStore: bottom-up-attention TSV files, folders of
per-image .npz or .pt files.

Each reader yields RegionInput records and reports broken ones to `bad` with the file and the line
(TSV) or the file (npz, pt); `convert_regions` writes them through a RegionStoreWriter, resuming an
interrupted run (images already in `<output>.partial` are skipped before being decoded).
"""

from __future__ import annotations

import base64
import binascii
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.stores.region_store import RegionStoreWriter, partial_path

Skip = Callable[[str], bool]  # True: the image is already written, do not decode it
TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


@dataclass
class RegionInput:
    image_id: str
    features: np.ndarray  # [R, D]
    boxes: np.ndarray  # [R, 4], pixels unless boxes_normalised
    width: int | None
    height: int | None
    tags: list[str] | None
    boxes_normalised: bool
    source: str  # file and line, for error messages


def _never(image_id: str) -> bool:
    return False


# -- bottom-up-attention TSV -------------------------------------------------------------------------
def read_tsv(
    paths: Sequence[str | Path], bad: BadRecords, skip: Skip = _never, progress: bool = True
) -> Iterator[RegionInput]:
    """The generate_tsv.py format of Anderson et al.: per line, tab-separated image_id, image_w,
    image_h, num_boxes, boxes (base64 float32 [num_boxes, 4], pixel x1, y1, x2, y2) and features
    (base64 float32 [num_boxes, D]).

    Lines are split by hand rather than with csv: the fields hold no tabs or quotes, and a line of
    100 boxes x 2048 floats is ~1 MB, far past csv's default field size limit.
    """
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"TSV file {path} does not exist")
        with (
            open(path, "rb") as f,
            tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar,
        ):
            for lineno, line in enumerate(f, 1):
                bar.update(len(line))
                if not line.strip():
                    continue
                record = _parse_tsv_line(path, lineno, line, bad, skip)
                if record is not None:
                    yield record


def _parse_tsv_line(path: Path, lineno: int, line: bytes, bad: BadRecords, skip: Skip) -> RegionInput | None:
    where = f"{path} line {lineno}"
    # the last line of a file cut off while being written has no newline (and broken fields)
    truncated = not line.endswith(b"\n")

    def fail(reason: str, message: str) -> None:
        if truncated:
            bad.bad("truncated last line", f"{where}: truncated last line (no newline at the end): {message}")
        else:
            bad.bad(reason, f"{where}: {message}")

    fields = line.rstrip(b"\r\n").split(b"\t")
    if len(fields) != len(TSV_FIELDS):
        fail(
            "wrong field count",
            f"expected {len(TSV_FIELDS)} tab-separated fields ({', '.join(TSV_FIELDS)}), found {len(fields)}",
        )
        return None
    image_id = fields[0].decode("utf-8", "replace").strip()
    if lineno == 1 and image_id == "image_id":  # a header line
        return None
    where = f"{where} (image {image_id!r})"
    if skip(image_id):
        return None
    try:
        width, height, num_boxes = (int(x) for x in fields[1:4])
    except ValueError:
        fail("bad number", f"image_w, image_h, num_boxes must be integers, found {[x[:20] for x in fields[1:4]]}")
        return None
    if num_boxes <= 0:
        fail("image without regions", f"image without regions (num_boxes={num_boxes})")
        return None
    arrays = []
    for name, raw in (("boxes", fields[4]), ("features", fields[5])):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as err:
            fail("bad base64", f"field {name} is not valid base64 ({err})")
            return None
        if len(data) % 4:
            fail("size mismatch", f"field {name} has {len(data)} bytes, not a whole number of float32")
            return None
        arrays.append(np.frombuffer(data, dtype="<f4"))
    boxes, features = arrays
    if boxes.size != num_boxes * 4:
        fail("size mismatch", f"boxes hold {boxes.size} floats, expected num_boxes*4 = {num_boxes * 4}")
        return None
    if features.size == 0 or features.size % num_boxes:
        fail("size mismatch", f"features hold {features.size} floats, not num_boxes*D for num_boxes={num_boxes}")
        return None
    return RegionInput(
        image_id,
        features.reshape(num_boxes, -1),
        boxes.reshape(num_boxes, 4),
        width,
        height,
        None,
        False,
        f"{path} line {lineno}",
    )  # the writer adds the image id to its messages


# -- per-image files ---------------------------------------------------------------------------------
def _files(inputs: Sequence[str | Path], suffix: str) -> list[Path]:
    """The files of the inputs: each a folder (its *suffix files, sorted) or a file."""
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files += sorted(path.glob(f"*{suffix}"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input {path} does not exist")
    if not files:
        raise DataError(f"no {suffix} files in {', '.join(map(str, inputs))}")
    return files


def _first(data, keys: tuple[str, ...]):
    for key in keys:
        if key in data:
            return data[key]
    return None


def _record_from_mapping(path: Path, data, bad: BadRecords) -> RegionInput | None:
    """features/x [R, D], boxes/bbox [R, 4], image_w/image_h or w/h, tags/objects."""
    where = str(path)
    features, boxes = _first(data, ("features", "x")), _first(data, ("boxes", "bbox"))
    for name, value in (("features (or x)", features), ("boxes (or bbox)", boxes)):
        if value is None:
            bad.bad("missing key", f"{where}: no {name} in the file (keys: {sorted(data.keys())})")
            return None
    features, boxes = _numpy(features), _numpy(boxes).astype(np.float32)
    if features.ndim == 1 and features.size == 0:
        features = features.reshape(0, 0)
    width, height = _first(data, ("image_w", "w")), _first(data, ("image_h", "h"))
    normalised = False
    if width is None or height is None:
        # no image size: only boxes already in [0, 1] can be used
        if boxes.size and np.nanmax(np.abs(boxes)) <= 1.0:
            normalised, width, height = True, None, None
        elif boxes.size:
            bad.bad("missing image size", f"{where}: no image_w/image_h (or w/h) to normalise pixel boxes")
            return None
    else:
        try:
            width, height = int(_numpy(width)), int(_numpy(height))
        except (TypeError, ValueError):
            bad.bad("bad number", f"{where}: the image size must be two integers")
            return None
    tags = _first(data, ("tags", "objects"))
    tags = [str(t) for t in np.atleast_1d(_numpy(tags)).tolist()] if tags is not None else None
    return RegionInput(path.stem, features, boxes, width, height, tags, normalised, where)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.element_size() < 4 and str(value.dtype) != "torch.float16":
            value = value.float()  # bfloat16 has no numpy dtype
        return value.numpy()
    return np.asarray(value)


def read_npz(
    inputs: Sequence[str | Path], bad: BadRecords, skip: Skip = _never, progress: bool = True
) -> Iterator[RegionInput]:
    """A folder (or folders, or files) of per-image .npz files; the image id is the file stem."""
    for path in tqdm(_files(inputs, ".npz"), unit="img", desc="npz", disable=not progress):
        if skip(path.stem):
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                record = _record_from_mapping(path, {k: data[k] for k in data.files}, bad)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            bad.bad("unreadable file", f"{path}: not a readable .npz file ({err})")
            continue
        if record is not None:
            yield record


def read_pt(
    inputs: Sequence[str | Path], bad: BadRecords, skip: Skip = _never, progress: bool = True
) -> Iterator[RegionInput]:
    """A folder (or folders, or files) of per-image .pt files, each a dict with the .npz keys."""
    import pickle

    import torch

    for path in tqdm(_files(inputs, ".pt"), unit="img", desc="pt", disable=not progress):
        if skip(path.stem):
            continue
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
            bad.bad("unreadable file", f"{path}: not a readable .pt file ({str(err).splitlines()[0]})")
            continue
        if not isinstance(data, dict):
            bad.bad("unreadable file", f"{path}: expected a dict of tensors, found {type(data).__name__}")
            continue
        record = _record_from_mapping(path, data, bad)
        if record is not None:
            yield record


READERS: dict[str, Callable[..., Iterator[RegionInput]]] = {"tsv": read_tsv, "npz": read_npz, "pt": read_pt}


# -- into a store ------------------------------------------------------------------------------------
def write_regions(records: Iterable[RegionInput], writer: RegionStoreWriter) -> int:
    """Add the records to the writer; returns how many it took (bad ones go to its `bad`)."""
    added = 0
    for r in records:
        added += writer.add(
            r.image_id,
            r.features,
            r.boxes,
            r.width,
            r.height,
            tags=r.tags,
            boxes_normalised=r.boxes_normalised,
            source=r.source,
        )
    return added


def _partial_feature_dim(output: Path) -> int | None:
    try:
        with h5py.File(partial_path(output), "r") as f:
            return int(f.attrs["feature_dim"])
    except (OSError, KeyError):
        return None  # none, or unreadable: the writer says so


def convert_regions(
    fmt: str,
    inputs: Sequence[str | Path],
    output: str | Path,
    dtype: str = "float16",
    bad: BadRecords | None = None,
    progress: bool = True,
) -> dict:
    """Write the detector outputs `inputs` in format `fmt` (tsv, npz, pt) to the store `output`.

    The feature width is the first good image's (or that of the .partial being resumed). Returns
    counts: images (in the store), written (this run), resumed (skipped: already in the .partial).
    """
    if fmt not in READERS:
        raise ValueError(f"format must be one of {sorted(READERS)}, not {fmt!r}")
    bad = bad if bad is not None else BadRecords()
    output = Path(output)
    writer: RegionStoreWriter | None = None
    if partial_path(output).exists():
        dim = _partial_feature_dim(output)
        writer = RegionStoreWriter(output, dim if dim is not None else 1, dtype, bad)
    seen: set[str] = set()  # this run's ids: a repeat of a resumed id is a duplicate, not a resume
    resumed = 0

    def skip(image_id: str) -> bool:
        nonlocal resumed
        if writer is None or image_id in seen or not writer.has(image_id):
            return False
        seen.add(image_id)
        resumed += 1
        return True

    written = 0
    try:
        for record in READERS[fmt](inputs, bad, skip=skip, progress=progress):
            seen.add(record.image_id)
            if writer is None:
                if record.features.ndim != 2:
                    bad.bad(
                        "wrong feature width",
                        f"{record.source}: features of shape {record.features.shape}, expected [regions, D]",
                    )
                    continue
                writer = RegionStoreWriter(output, record.features.shape[1], dtype, bad)
            written += write_regions([record], writer)
    except BaseException:
        if writer is not None:
            writer.abandon()  # what is committed stays in the .partial for the rerun
        raise
    if writer is None or len(writer) == 0:
        if writer is not None:
            writer.abandon()
        raise DataError(f"no usable images in {', '.join(map(str, inputs))}" + (f" ({bad.summary()})" if bad else ""))
    images = len(writer)
    writer.close()
    return {
        "output": str(output),
        "images": images,
        "written": written,
        "resumed": resumed,
        "feature_dim": writer.feature_dim,
        "dtype": str(writer.dtype),
        "bytes": output.stat().st_size,
        "skipped": dict(sorted(bad.counts.items())),
    }
