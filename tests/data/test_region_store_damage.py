"""A region store damaged on disk: bytes overwritten inside a features chunk raise DataError naming
the store and the image (HDF5's fletcher32 checksums), instead of reading as NaN features."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrerank.data.errors import DataError
from retrerank.data.stores.region_store import RegionStore, RegionStoreWriter

DIM = 512  # float32 rows of 2 KB: 32 rows per 64 KB chunk, so that the store has several chunks
CHECKED = ("features", "boxes", "offsets", "width", "height")


def write_store(path: Path, n: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    features = []
    with RegionStoreWriter(path, DIM, "float32") as writer:
        for i in range(n):
            features.append(rng.standard_normal((i % 4 + 1, DIM)).astype(np.float32))
            writer.add(f"im{i}", features[-1], np.tile([0, 0, 10, 10], (i % 4 + 1, 1)), 20, 20)
    return features


def damage(path: Path, row: int, size: int = 16) -> None:
    """Overwrite `size` bytes of feature row `row` where HDF5 keeps them on disk."""
    with h5py.File(path, "r") as f:
        features = f["features"]
        rows = features.chunks[0]
        chunk = features.id.get_chunk_info_by_coord((row // rows * rows, 0))
        start = chunk.byte_offset + (row % rows) * DIM * features.dtype.itemsize
        assert (row % rows + 1) * DIM * features.dtype.itemsize <= chunk.size  # inside the chunk's data
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * size)  # as float32: NaN


def without_checksums(source: Path, path: Path) -> Path:
    """A copy laid out as stores were written before the checksum filter (same chunks, no filters)."""
    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        for name, data in src.items():
            dst.create_dataset(name, data=data[:], dtype=data.dtype, chunks=data.chunks, maxshape=data.maxshape)
        dst.attrs.update(src.attrs)
    return path


def test_stores_are_written_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_store(path, 4)
    with h5py.File(path, "r") as f:
        assert all(f[name].fletcher32 for name in CHECKED)
    assert RegionStore(path).checksummed


def test_damaged_features_raise_naming_the_store_and_the_image(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    features = write_store(path)
    damage(path, int(RegionStore(path).offsets[30]))
    store = RegionStore(path)  # opens: the metadata is intact
    with pytest.raises(
        DataError,
        match=re.escape(
            f"region store {path} is corrupt: the features of image 'im30' (row 30) fail their checksum; rerun"
        ),
    ):
        _ = store.image("im30").features
    np.testing.assert_array_equal(store.image("im0").features, features[0])  # other chunks read as before


def test_a_store_without_checksums_still_reads_and_damage_that_reads_as_nan_is_caught(tmp_path: Path) -> None:
    features = write_store(tmp_path / "new.h5")
    path = without_checksums(tmp_path / "new.h5", tmp_path / "old.h5")
    store = RegionStore(path)
    assert not store.checksummed
    for i in (0, 30, 59):
        np.testing.assert_array_equal(store.image(f"im{i}").features, features[i])
    store.close()  # HDF5 would share the open file, and its cached chunks, with the next RegionStore
    damage(path, int(store.offsets[30]))
    with pytest.raises(
        DataError,
        match=re.escape(
            f"region store {path} is corrupt: the features of image 'im30' "
            "(row 30) hold NaN or inf, which the writer never stores; rerun"
        ),
    ):
        _ = RegionStore(path).image("im30").features
