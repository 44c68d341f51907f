"""Region features of a whole dataset in one HDF5 file: written in resumable batches, read lazily.

Layout (attrs: format="retrerank-regions", version=1, feature_dim, complete, committed):
    features  [total_regions, D]  float16 or float32, chunked along rows, no compression
    boxes     [total_regions, 4]  float32, (x1, y1, x2, y2) normalised to [0, 1]
    offsets   [N + 1]             int64: image i is rows offsets[i]:offsets[i + 1]
    image_ids [N]                 variable-length UTF-8
    width, height [N]             int32 pixels (0: unknown, the source gave normalised boxes)
    tags      [N]                 variable-length UTF-8, object tags joined by "\\t" (optional)
    image_ids_crc32, tags_crc32 [N]  uint32: CRC-32 of each image id's (each tags string's) UTF-8 bytes

The writer fills `<path>.partial` and renames it to `path` only on a clean close, so a store
at `path` without complete=True is never produced by it; the reader rejects one anyway.

Integrity: every numeric dataset is written with HDF5's fletcher32 checksum filter, which HDF5
checks on each chunk it reads, so bytes damaged on disk raise DataError instead of reading as NaN
features. Variable-length strings cannot be filtered, so each image id and each tags string has
its CRC-32 beside it (in a filtered dataset of its own): a damaged byte in an id (`img0106` read
as `imf0106`) is refused naming the row, instead of silently renaming the image. A per-id checksum
rather than one digest of all ids, so that the error names the id; CRC-32 rather than SHA-256,
since it guards against damage, not against someone who rewrites both. Duplicate ids are refused
when written and again when read (a crafted or damaged store), since an id must name one image.

A checksum covers a whole chunk (64 KB of feature rows, 1024 rows of boxes), and a chunk can hold
the rows of more than one image: the chunk where one image ends and the next begins, or several
images where features are narrow. So the image a read fails on may not be the damaged one: the
error names the range of images whose rows share the failing chunk, any of which may hold the
damage; images in other chunks still read.

Any HDF5 reader verifies the filter and ignores datasets it does not know, so the layout and its
version stay the same. Stores written before the filter still read; their features and boxes are
checked for NaN and inf instead (the writer never stores either), which catches most damage but not
all. Stores written before the id checksums still read too, with duplicate and UTF-8 checks on
their ids and one UncheckedStoreWarning saying that a rebuild adds the checksums: refusing them would
make every existing store unusable until it is converted again from the detector's outputs (a long
run, from files a user may no longer have), while their features, where filtered, stay checked.
Rebuild either kind with `experiments.prepare` to get the checksums.

Over 300 lines on purpose: the writer and the reader share the one definition of the format above
(layout, version, chunk sizes, checksum and finiteness rules); split, the format would live in two files.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from retrerank.data.errors import BadRecords, DataError

FORMAT = "retrerank-regions"
VERSION = 1
DTYPES = ("float16", "float32")
# A checksummed chunk is read and verified whole, so chunks are about an image's size (36 x 2048
# float16 = 144 KB): an image read costs at most one chunk more than its own rows.
CHUNK_BYTES = 64 << 10  # features chunk size
_BOX_CHUNK = 1024  # rows per boxes chunk (16 KB), read with each image too
_META_CHUNK = 4096  # rows per chunk of the per-image datasets, read whole at open
# Holds a few checksummed chunks (the next image's rows often share one); stays below the 1 MB
# chunks of older, unchecksummed stores, of which HDF5 then reads only the rows asked for.
CHUNK_CACHE_BYTES = 256 << 10
# float dtype -> (same-width uint, mask of all but the sign, smallest NaN/inf bit pattern)
_FLOAT_BITS = {
    np.dtype(np.float16): (np.uint16, 0x7FFF, 0x7C00),
    np.dtype(np.float32): (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
}
_PREPARE_HINT = "rerun `python -m experiments.prepare regions ...` to build or finish it"
_REBUILD_HINT = "rebuild it with `python -m experiments.prepare regions ...`"
CRCS = {"image_ids": "image_ids_crc32", "tags": "tags_crc32"}  # string dataset -> its checksums


class UncheckedStoreWarning(UserWarning):
    """A region store without the checksums of its image ids: it reads, unchecked; a rebuild adds them."""


def crc32(values: Iterable[str | bytes]) -> np.ndarray:
    """CRC-32 of each string's UTF-8 bytes (bytes as they are), as uint32."""
    return np.array(
        [zlib.crc32(v.encode("utf-8") if isinstance(v, str) else v) for v in values], dtype=np.uint32
    ).reshape(-1)


def partial_path(path: str | Path) -> Path:
    return Path(f"{path}.partial")


class RegionStoreWriter:
    """Appends images to `<path>.partial` in batches; a clean close renames it to `path`.

    An existing `<path>.partial` (an interrupted run) is resumed: the datasets are cut back to
    the last committed batch and `has(image_id)` tells which images are already in it.
    Broken images go to `bad` (strict by default: DataError naming the source and the image).
    """

    def __init__(
        self,
        path: str | Path,
        feature_dim: int,
        dtype: str = "float16",
        bad: BadRecords | None = None,
        batch_images: int = 256,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        if feature_dim <= 0:
            raise ValueError(f"feature_dim must be positive, not {feature_dim}")
        self.path = Path(path)
        self.partial = partial_path(path)
        self.feature_dim = int(feature_dim)
        self.dtype = np.dtype(dtype)
        self.bad = bad if bad is not None else BadRecords()
        self.batch_images = batch_images
        self.resumed = 0  # images found in the .partial when it was opened
        self._ids: set[str] = set()  # committed and buffered
        self._buffer: list[tuple[str, np.ndarray, np.ndarray, int, int, str]] = []
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists():
            self._file = self._resume()
        else:
            self._file = self._create()
        self._count = int(self._file.attrs["committed"])
        self._rows = int(self._file["offsets"][self._count])

    # -- opening -----------------------------------------------------------------------------
    def _create(self) -> h5py.File:
        f = h5py.File(self.partial, "w")
        rows_per_chunk = max(1, CHUNK_BYTES // (self.feature_dim * self.dtype.itemsize))
        f.create_dataset(
            "features",
            (0, self.feature_dim),
            self.dtype,
            maxshape=(None, self.feature_dim),
            chunks=(rows_per_chunk, self.feature_dim),
            fletcher32=True,
        )
        f.create_dataset("boxes", (0, 4), np.float32, maxshape=(None, 4), chunks=(_BOX_CHUNK, 4), fletcher32=True)
        f.create_dataset(
            "offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(_META_CHUNK,), fletcher32=True
        )
        text = h5py.string_dtype("utf-8")
        for name, dt in (("image_ids", text), ("width", np.int32), ("height", np.int32), ("tags", text)):
            f.create_dataset(
                name, (0,), dt, maxshape=(None,), chunks=(_META_CHUNK,), fletcher32=dt is not text
            )  # HDF5 cannot filter variable-length data: their checksums are datasets of their own
        for name in CRCS.values():
            _create_crcs(f, name, np.zeros(0, np.uint32))
        f.attrs.update(format=FORMAT, version=VERSION, feature_dim=self.feature_dim, complete=False, committed=0)
        f.flush()
        return f

    def _resume(self) -> h5py.File:
        try:
            f = h5py.File(self.partial, "r+")
        except OSError as err:
            raise DataError(
                f"cannot resume the interrupted store {self.partial}: it is unreadable ({err}); delete it to start over"
            ) from None
        try:
            attrs = f.attrs
            if attrs.get("format") != FORMAT or "committed" not in attrs:
                raise DataError(f"{self.partial} is not a partial retrerank region store; delete it to start over")
            found = (int(attrs["feature_dim"]), np.dtype(f["features"].dtype))
            if found != (self.feature_dim, self.dtype):
                raise DataError(
                    f"{self.partial} was started with feature_dim {found[0]} and dtype {found[1]}, this run "
                    f"writes feature_dim {self.feature_dim} and dtype {self.dtype}; delete it to start over"
                )
            committed = int(attrs["committed"])
            rows = int(f["offsets"][committed])
            # whatever an interrupted batch wrote past the committed count is dropped
            for name in ("features", "boxes"):
                f[name].resize(rows, axis=0)
            f["offsets"].resize(committed + 1, axis=0)
            for name in ("image_ids", "width", "height", "tags"):
                f[name].resize(committed, axis=0)
            for name, crcs in CRCS.items():
                if crcs in f:
                    f[crcs].resize(committed, axis=0)
                else:  # a partial started without checksums: add those of what it holds
                    _create_crcs(f, crcs, crc32(f[name][:]))
            ids = f["image_ids"].asstr()[:].tolist()
            if len(set(ids)) != len(ids) or (crc32(ids) != f["image_ids_crc32"][:]).any():
                raise DataError(
                    f"cannot resume the interrupted store {self.partial}: its image ids are damaged or "
                    "repeated; delete it to start over"
                )
            self._ids.update(ids)
        except (KeyError, OSError, ValueError, IndexError) as err:
            f.close()
            if isinstance(err, DataError):
                raise
            raise DataError(
                f"cannot resume the interrupted store {self.partial}: {err}; delete it to start over"
            ) from None
        self.resumed = committed
        return f

    # -- writing -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Images written so far, buffered ones included."""
        return self._count + len(self._buffer)

    def has(self, image_id: str) -> bool:
        """Whether the image is already in the store (an earlier run, or this one)."""
        return image_id in self._ids

    def add(
        self,
        image_id: str,
        features: np.ndarray,
        boxes: np.ndarray,
        width: int | None,
        height: int | None,
        tags: Sequence[str] | str | None = None,
        boxes_normalised: bool = False,
        source: str | None = None,
    ) -> bool:
        """Add one image; returns False where it was bad (and skipped, in lenient mode).

        boxes are pixel (x1, y1, x2, y2) divided here by width and height, unless
        `boxes_normalised`. `source` names where the image came from (file and line) in errors.
        """
        where = f"{source or self.path}: image {image_id!r}"
        if not isinstance(image_id, str) or not image_id:
            self.bad.bad("bad image id", f"{where}: the image id must be a non-empty string")
            return False
        if image_id in self._ids:
            self.bad.bad("duplicate image id", f"{where}: duplicate image id (already in the store)")
            return False
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            found = features.shape[1] if features.ndim == 2 else f"an array of shape {features.shape}"
            self.bad.bad(
                "wrong feature width", f"{where}: wrong feature width: expected {self.feature_dim}, found {found}"
            )
            return False
        if features.shape[0] == 0:
            self.bad.bad("image without regions", f"{where}: image without regions (0 boxes)")
            return False
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.shape != (features.shape[0], 4):
            self.bad.bad(
                "boxes do not match features",
                f"{where}: boxes of shape {boxes.shape} for {features.shape[0]} regions "
                f"(expected ({features.shape[0]}, 4))",
            )
            return False
        with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
            stored = features.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():  # after the cast: float16 overflow counts too
            self.bad.bad(
                "non-finite features", f"{where}: non-finite features (NaN or inf, or beyond the {self.dtype} range)"
            )
            return False
        if not np.isfinite(boxes).all():
            self.bad.bad("non-finite boxes", f"{where}: non-finite boxes")
            return False
        width, height = int(width or 0), int(height or 0)
        if not boxes_normalised:
            if width <= 0 or height <= 0:
                self.bad.bad("bad image size", f"{where}: image size {width}x{height} cannot normalise pixel boxes")
                return False
            boxes = boxes / np.array([width, height, width, height], np.float32)
        # detectors put box edges a little outside the image; the embedding wants [0, 1]
        boxes = np.clip(boxes, 0.0, 1.0)
        if isinstance(tags, str):
            tags = [tags]
        joined = "\t".join(t.replace("\t", " ") for t in tags) if tags else ""
        self._ids.add(image_id)
        self._buffer.append((image_id, stored, boxes, width, height, joined))
        if len(self._buffer) >= self.batch_images:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the buffered images and commit them (the count a resume starts from)."""
        if not self._buffer:
            return
        f = self._file
        ids, feats, boxes, widths, heights, tags = zip(*self._buffer)
        counts = np.array([len(x) for x in feats], np.int64)
        n0, n1 = self._count, self._count + len(ids)
        r0, r1 = self._rows, self._rows + int(counts.sum())
        for name, values in (("features", np.concatenate(feats)), ("boxes", np.concatenate(boxes))):
            f[name].resize(r1, axis=0)
            f[name][r0:r1] = values
        f["offsets"].resize(n1 + 1, axis=0)
        f["offsets"][n0 + 1 : n1 + 1] = r0 + np.cumsum(counts)
        columns = {"image_ids": ids, "width": widths, "height": heights, "tags": tags}
        columns |= {CRCS["image_ids"]: crc32(ids), CRCS["tags"]: crc32(tags)}
        for name, values in columns.items():
            f[name].resize(n1, axis=0)
            f[name][n0:n1] = np.array(values, dtype=object if name in CRCS else f[name].dtype)
        # the data first, then the count that makes it part of the store
        f.attrs["committed"] = n1
        f.flush()
        self._count, self._rows = n1, r1
        self._buffer.clear()

    def close(self) -> Path:
        """Finish: flush, mark complete, and move the file into place."""
        self.flush()
        self._file.attrs["complete"] = True
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        """Stop after an error: commit what is buffered and keep the .partial for a resume."""
        try:
            self.flush()
        finally:
            self._file.close()

    def __enter__(self) -> RegionStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def _create_crcs(f: h5py.File, name: str, data: np.ndarray) -> None:
    f.create_dataset(name, data=data, maxshape=(None,), chunks=(_META_CHUNK,), fletcher32=True)


class RegionStore:
    """Reads a store written by RegionStoreWriter, one image at a time, without loading features.

    The h5py handle is opened on first use in each process (DataLoader workers, fork or spawn,
    get their own), and the object pickles as its path.
    """

    def __init__(self, path: str | Path, chunk_cache_bytes: int = CHUNK_CACHE_BYTES) -> None:
        self.path = Path(path)
        self.chunk_cache_bytes = chunk_cache_bytes
        self._handles: dict[int, tuple[h5py.File, h5py.Dataset, h5py.Dataset]] = {}
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._check()

    def __getstate__(self) -> dict:
        return {"path": self.path, "chunk_cache_bytes": self.chunk_cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["chunk_cache_bytes"])

    def _open(self) -> h5py.File:
        if not self.path.exists():
            hint = (
                f"only {partial_path(self.path)} exists (an interrupted prepare)"
                if partial_path(self.path).exists()
                else "the file does not exist"
            )
            raise DataError(f"region store {self.path}: {hint}; {_PREPARE_HINT}")
        try:
            return h5py.File(self.path, "r", rdcc_nbytes=self.chunk_cache_bytes)
        except OSError as err:
            raise DataError(
                f"region store {self.path} is not a readable HDF5 file (truncated or corrupt?): {err}; {_PREPARE_HINT}"
            ) from None

    def _check(self) -> None:
        """Read the small metadata and check that the datasets agree with each other."""
        f = self._open()
        try:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT:
                raise DataError(
                    f"{self.path} is not a retrerank region store (format attribute "
                    f"{attrs.get('format')!r}, expected {FORMAT!r})"
                )
            if int(attrs.get("version", -1)) != VERSION:
                raise DataError(
                    f"region store {self.path} has version {attrs.get('version')}, this code reads "
                    f"version {VERSION}; {_PREPARE_HINT}"
                )
            if not bool(attrs.get("complete", False)):
                raise DataError(
                    f"region store {self.path} is incomplete (an interrupted or failed prepare); {_PREPARE_HINT}"
                )
            missing = [n for n in ("features", "boxes", "offsets", "image_ids", "width", "height") if n not in f]
            if missing:
                raise DataError(f"region store {self.path} is inconsistent: datasets {missing} are missing")
            features, boxes = f["features"], f["boxes"]
            offsets = self._read_whole(f["offsets"]).astype(np.int64)
            n = len(offsets) - 1
            self.feature_dim = int(attrs["feature_dim"])
            self.dtype = np.dtype(features.dtype)
            self.has_tags = "tags" in f
            self.checksummed = bool(features.fletcher32 and boxes.fletcher32)
            self.ids_checksummed = CRCS["image_ids"] in f
            problems = []
            if features.ndim != 2 or features.shape[1] != self.feature_dim:
                problems.append(f"features of shape {features.shape} for feature_dim {self.feature_dim}")
            if boxes.shape != (features.shape[0], 4):
                problems.append(f"boxes of shape {boxes.shape} for {features.shape[0]} feature rows")
            if n < 0 or offsets[0] != 0 or offsets[-1] != features.shape[0] or (np.diff(offsets) <= 0).any():
                problems.append(f"offsets do not split the {features.shape[0]} feature rows into non-empty images")
            per_image = ("image_ids", "width", "height") + (("tags",) if self.has_tags else ())
            per_image += tuple(CRCS[name] for name in ("image_ids", "tags") if CRCS[name] in f)
            for name in per_image:
                if f[name].shape != (n,):
                    problems.append(f"{name} has {f[name].shape[0]} entries for {n} images")
            if problems:
                raise DataError(f"region store {self.path} is inconsistent: " + "; ".join(problems))
            self.offsets = offsets
            self.width = self._read_whole(f["width"]).astype(np.int32)
            self.height = self._read_whole(f["height"]).astype(np.int32)
        except OSError as err:
            raise DataError(f"region store {self.path} is corrupt: {err}; {_PREPARE_HINT}") from None
        finally:
            f.close()

    def _read_whole(self, dataset: h5py.Dataset) -> np.ndarray:
        """A small per-image dataset, read at open; a chunk that fails its checksum names its rows."""
        try:
            return dataset[:]
        except OSError as err:
            chunks = _failing_chunks(dataset, 0, dataset.shape[0])
            if "filter returned failure" not in str(err) or not chunks:
                raise DataError(
                    f"region store {self.path} is corrupt: its {dataset.name[1:]} cannot be read ({err}); "
                    f"{_PREPARE_HINT}"
                ) from None
            rows = ", ".join(f"{a}-{b - 1}" for a, b in chunks)
            raise DataError(
                f"region store {self.path} is corrupt: the {dataset.name[1:]} of the images at rows {rows} "
                f"fail their checksum; {_PREPARE_HINT}"
            ) from None

    def _datasets(self) -> tuple[h5py.File, h5py.Dataset, h5py.Dataset]:
        # one handle per process: an h5py handle inherited through fork must not be used
        pid = os.getpid()
        handle = self._handles.get(pid)
        if handle is None:
            f = self._open()
            handle = self._handles[pid] = (f, f["features"], f["boxes"])
        return handle

    def close(self) -> None:
        handle = self._handles.pop(os.getpid(), None)
        if handle is not None:
            handle[0].close()

    # -- ids ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def ids(self) -> list[str]:
        """The image ids in row order, checked against their CRC-32s (where the store has them), for
        UTF-8 and for duplicates; DataError naming the row otherwise."""
        if self._ids is None:
            f = self._datasets()[0]
            raw = self._strings(f, "image_ids")  # raw bytes: a damaged byte may not even be UTF-8
            if not self.ids_checksummed:
                warnings.warn(
                    f"region store {self.path} has no checksums of its image ids"
                    + ("" if self.checksummed else " or features")
                    + f": they are read unchecked; {_REBUILD_HINT} to add them",
                    UncheckedStoreWarning,
                    stacklevel=2,
                )
            ids = []
            for row, value in enumerate(raw):
                try:
                    ids.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    raise DataError(
                        f"region store {self.path} is corrupt: the image id at row {row} ({value!r}) is not UTF-8; "
                        f"{_REBUILD_HINT}"
                    ) from None
            first: dict[str, int] = {}
            for row, image_id in enumerate(ids):
                if image_id in first:
                    repeated = len(ids) - len(set(ids))
                    more = f" ({repeated} repeats in all)" if repeated > 1 else ""
                    raise DataError(
                        f"region store {self.path} has a duplicate image id: {image_id!r} at rows "
                        f"{first[image_id]} and {row}{more}; an id must name one image: {_REBUILD_HINT}"
                    )
                first[image_id] = row
            self._ids = ids
        return self._ids

    def _strings(self, f: h5py.File, name: str, row: int | None = None) -> list[bytes]:
        """The raw bytes of a string dataset (all rows, or one), checked against their CRC-32s."""
        rows = slice(None) if row is None else slice(row, row + 1)
        try:
            raw = [bytes(v) for v in f[name][rows]]
            crcs = f[CRCS[name]][rows] if CRCS[name] in f else None
        except OSError as err:
            raise DataError(
                f"region store {self.path} is corrupt: cannot read {name} ({err}); {_REBUILD_HINT}"
            ) from None
        if crcs is not None:
            bad = np.flatnonzero(crc32(raw) != crcs)
            if len(bad):
                at, shown = int(bad[0]) + (row or 0), raw[int(bad[0])].decode("utf-8", "replace")
                if name == "image_ids":
                    what = f"image id at row {at} ({shown!r}) does not match its checksum"
                else:
                    what = f"tags at row {at} ({shown!r}) do not match their checksum"
                more = f" ({len(bad)} rows in all)" if len(bad) > 1 else ""
                raise DataError(f"region store {self.path} is corrupt: the {what}{more}; {_REBUILD_HINT}")
        return raw

    def _row_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {image_id: i for i, image_id in enumerate(self.ids)}
        return self._index

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row_index()

    def row(self, image_id: str) -> int:
        try:
            return self._row_index()[image_id]
        except KeyError:
            raise DataError(f"image {image_id!r} is not in region store {self.path}") from None

    # -- reading -----------------------------------------------------------------------------
    def num_regions(self, row: int) -> int:
        return int(self.offsets[row + 1] - self.offsets[row])

    def read(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """features [R, D] in the store's dtype and boxes [R, 4] float32 of image `row`."""
        return self.read_features(row), self.read_boxes(row)

    def read_features(self, row: int) -> np.ndarray:
        return self._read(1, row)

    def read_boxes(self, row: int) -> np.ndarray:
        return self._read(2, row)

    def read_into(self, row: int, features: np.ndarray, boxes: np.ndarray) -> None:
        """Copy image `row` into `features` [R, D] and `boxes` [R, 4] (e.g. rows of a batch)."""
        features[...] = self._read(1, row)
        boxes[...] = self._read(2, row)

    def _read(self, which: int, row: int) -> np.ndarray:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} is outside region store {self.path} of {len(self)} images")
        dataset = self._datasets()[which]
        try:
            # one contiguous slice: h5py's fast path for it costs ~20 us, read_direct about 3x that
            values = dataset[self.offsets[row] : self.offsets[row + 1]]
        except OSError as err:
            # fletcher32 is the only filter: its failure is a checksum that does not match
            if "filter returned failure" not in str(err):
                raise self._corrupt(row, dataset.name[1:], f"cannot be read ({err})") from None
            raise self._corrupt(row, dataset.name[1:], "fail their checksum" + self._neighbours(dataset, row)) from None
        if not self.checksummed and not _all_finite(values):  # the writer stores no NaN or inf
            raise self._corrupt(row, dataset.name[1:], "hold NaN or inf, which the writer never stores")
        return values

    def _neighbours(self, dataset: h5py.Dataset, row: int) -> str:
        """Where the damage may be, when the failing chunks hold other images' rows too."""
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        chunks = _failing_chunks(dataset, start, stop) or [(start, stop)]
        first = int(np.searchsorted(self.offsets, chunks[0][0], side="right")) - 1
        last = min(int(np.searchsorted(self.offsets, chunks[-1][1], side="left")) - 1, len(self) - 1)
        if first == last:
            return ""
        try:
            names = f"images {self.ids[first]!r} to {self.ids[last]!r} (rows {first}-{last})"
        except DataError:  # the ids are damaged too
            names = f"the images at rows {first}-{last}"
        return (
            f": the damaged chunk{'s' if len(chunks) > 1 else ''} of {dataset.name[1:]} also "
            f"hold{'' if len(chunks) > 1 else 's'} other images' rows, so the damage may be in any of {names}"
        )

    def _corrupt(self, row: int, what: str, why: str) -> DataError:
        try:
            image = f"image {self.ids[row]!r} (row {row})"
        except DataError:  # the ids are damaged too
            image = f"image row {row}"
        return DataError(f"region store {self.path} is corrupt: the {what} of {image} {why}; {_PREPARE_HINT}")

    def tags(self, row: int) -> tuple[str, ...]:
        if not self.has_tags:
            return ()
        (raw,) = self._strings(self._datasets()[0], "tags", row)
        joined = raw.decode("utf-8", "replace")
        return tuple(joined.split("\t")) if joined else ()

    def image(self, image_id: str) -> StoredImage:
        return StoredImage(self, self.row(image_id), image_id)

    def images(self, ids: Iterable[str] | None = None) -> list[StoredImage]:
        if ids is None:
            return [StoredImage(self, row, image_id) for row, image_id in enumerate(self.ids)]
        return [self.image(image_id) for image_id in ids]

    def __repr__(self) -> str:
        return (
            f"RegionStore({str(self.path)!r}, images={len(self)}, feature_dim={self.feature_dim}, dtype={self.dtype})"
        )


def _failing_chunks(dataset: h5py.Dataset, start: int, stop: int) -> list[tuple[int, int]]:
    """The row ranges [a, b) of the chunks of `dataset` that hold rows start:stop and fail to read."""
    rows = dataset.chunks[0] if dataset.chunks else max(1, dataset.shape[0])
    failing = []
    for a in range(start // rows * rows, max(stop, start + 1), rows):
        b = min(a + rows, dataset.shape[0])
        try:
            dataset[a:b]
        except OSError:
            failing.append((a, b))
    return failing


def _all_finite(values: np.ndarray) -> bool:
    # on the bits: np.isfinite takes ~20x longer on float16 (~300 us for 36 x 2048 values)
    uint, magnitude, nan_or_inf = _FLOAT_BITS[values.dtype]
    return values.size == 0 or int((values.view(uint) & magnitude).max()) < nan_or_inf


_OPEN: dict[str, RegionStore] = {}  # per process: the stores that unpickled StoredImages read from


def open_store(path: str | Path) -> RegionStore:
    """The process's one RegionStore for `path` (opened on first use)."""
    key = os.path.abspath(path)
    store = _OPEN.get(key)
    if store is None:
        store = _OPEN[key] = RegionStore(key)
    return store


def _stored_image(path: str, row: int, image_id: str) -> StoredImage:
    return StoredImage(open_store(path), row, image_id)


class StoredImage:
    """An image of a RegionStore with the attributes of an ImageRecord; features and boxes are read
    from the file on each access (nothing is kept), so a split of millions of them is small.

    Pickles as (store path, row, image_id): cheap to send to DataLoader workers.
    """

    __slots__ = ("store", "row", "image_id")
    pixels = None  # region features only (pixel backbones say so by name when they meet one)

    def __init__(self, store: RegionStore, row: int, image_id: str) -> None:
        self.store = store
        self.row = row
        self.image_id = image_id

    @property
    def features(self) -> np.ndarray:
        return self.store.read_features(self.row)

    @property
    def boxes(self) -> np.ndarray:
        return self.store.read_boxes(self.row)

    @property
    def num_regions(self) -> int:
        return self.store.num_regions(self.row)

    @property
    def feature_dim(self) -> int:
        return self.store.feature_dim

    @property
    def dtype(self) -> np.dtype:
        return self.store.dtype

    def read_into(self, features: np.ndarray, boxes: np.ndarray) -> None:
        self.store.read_into(self.row, features, boxes)

    @property
    def width(self) -> int:
        return int(self.store.width[self.row])

    @property
    def height(self) -> int:
        return int(self.store.height[self.row])

    @property
    def tags(self) -> tuple[str, ...]:
        return self.store.tags(self.row)

    def __reduce__(self):
        return _stored_image, (str(self.store.path.absolute()), self.row, self.image_id)

    def __repr__(self) -> str:
        return f"StoredImage({self.image_id!r}, row={self.row}, store={str(self.store.path)!r})"
