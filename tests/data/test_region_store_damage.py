"""A region store damaged on disk: bytes overwritten inside a features chunk raise DataError naming
the store, the image and the neighbours that share its chunk (HDF5's fletcher32 checksums), instead of
reading as NaN features; a damaged byte in an image id or in tags fails its CRC-32 naming the row, and
duplicate image ids are refused."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrerank.data.errors import DataError
from retrerank.data.stores.region_store import RegionStore, RegionStoreWriter, UncheckedStoreWarning

DIM = 512  # float32 rows of 2 KB: 32 rows per 64 KB chunk, so that the store has several chunks
CHECKED = ("features", "boxes", "offsets", "width", "height", "image_ids_crc32", "tags_crc32")
HINT = "rebuild it with `python -m experiments.prepare regions ...`"


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


def damage_dataset(path: Path, name: str, row: int) -> None:
    """Overwrite the bytes of row `row` of a small dataset (one chunk) where HDF5 keeps them on disk."""
    with h5py.File(path, "r") as f:
        chunk = f[name].id.get_chunk_info_by_coord((0,))
        start = chunk.byte_offset + row * f[name].dtype.itemsize
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\x55" * f_itemsize(path, name))


def f_itemsize(path: Path, name: str) -> int:
    with h5py.File(path, "r") as f:
        return f[name].dtype.itemsize


def read_ids(path: Path) -> list[str]:
    """The store's ids, its file closed afterwards even on an error (HDF5 would share the open file,
    and its cached bytes, with the next RegionStore of the same path)."""
    store = RegionStore(path)
    try:
        return store.ids
    finally:
        store.close()


def flip(path: Path, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of `old` in the file's bytes (a string in HDF5's heap) by `new`."""
    data = path.read_bytes()
    assert data.count(old) == 1 and len(new) == len(old)
    path.write_bytes(data.replace(old, new))


def without_checksums(source: Path, path: Path, keep_filters: bool = False) -> Path:
    """A copy laid out as stores were written before the checksum filter (same chunks, no filters), or
    with `keep_filters` before the checksums of the ids (the filters, but no *_crc32 datasets)."""
    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        for name, data in src.items():
            if name.endswith("_crc32"):
                continue
            dst.create_dataset(
                name,
                data=data[:],
                dtype=data.dtype,
                chunks=data.chunks,
                maxshape=data.maxshape,
                fletcher32=keep_filters and data.fletcher32,
            )
        dst.attrs.update(src.attrs)
    return path


def test_stores_are_written_with_checksums(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_store(path, 4)
    with h5py.File(path, "r") as f:
        assert all(f[name].fletcher32 for name in CHECKED)
    assert RegionStore(path).checksummed


def test_damaged_features_raise_naming_the_store_the_image_and_the_neighbours_in_its_chunk(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    features = write_store(path)
    damage(path, int(RegionStore(path).offsets[30]))
    store = RegionStore(path)  # opens: the metadata is intact
    # 32 rows per chunk, 1 to 4 rows per image: the chunk of rows 64-95 holds rows of images 26 to 38
    assert store.offsets[26] < 64 < store.offsets[27] and store.offsets[38] < 96 <= store.offsets[39]
    neighbours = (
        ": the damaged chunk of features also holds other images' rows, so the damage may be in any of "
        "images 'im26' to 'im38' (rows 26-38); rerun `python -m experiments.prepare regions ...`"
    )
    for image in ("im30", "im33"):  # the damaged image, and an intact one that shares its chunk
        with pytest.raises(DataError) as err:
            _ = store.image(image).features
        row = int(image[2:])
        assert str(err.value) == (
            f"region store {path} is corrupt: the features of image {image!r} (row {row}) fail their checksum"
            f"{neighbours} to build or finish it"
        )
    np.testing.assert_array_equal(store.image("im0").features, features[0])  # other chunks read as before
    np.testing.assert_array_equal(store.image("im39").features, features[39])


def test_a_damaged_chunk_of_a_per_image_dataset_names_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_store(path)
    damage_dataset(path, "width", 5)
    with pytest.raises(DataError) as err:
        RegionStore(path)
    assert str(err.value) == (
        f"region store {path} is corrupt: the width of the images at rows 0-59 fail their checksum; "
        "rerun `python -m experiments.prepare regions ...` to build or finish it"
    )


def test_a_flipped_byte_in_an_image_id_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_store(path)
    flip(path, b"im30", b"in30")
    store = RegionStore(path)
    with pytest.raises(DataError) as err:
        _ = store.ids
    assert str(err.value) == (
        f"region store {path} is corrupt: the image id at row 30 ('in30') does not match its checksum; {HINT}"
    )
    with pytest.raises(DataError, match="row 30"):
        store.image("im0")  # every use of the ids goes through the check
    store.close()
    flip(path, b"in30", b"i\xff30")  # not even UTF-8: still the same one line
    with pytest.raises(DataError, match=re.escape("the image id at row 30 ('i\ufffd30') does not match")):
        read_ids(path)


def test_a_flipped_byte_in_tags_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with RegionStoreWriter(path, 4, "float32") as writer:
        for i in range(3):
            writer.add(f"im{i}", np.ones((1, 4)), np.array([[0, 0, 1, 1]]), 1, 1, tags=[f"dog{i}", "ball"])
    flip(path, b"dog1\tball", b"dig1\tball")
    store = RegionStore(path)
    assert store.image("im0").tags == ("dog0", "ball")
    with pytest.raises(DataError) as err:
        _ = store.image("im1").tags
    assert str(err.value) == (
        f"region store {path} is corrupt: the tags at row 1 ('dig1\\tball') do not match their checksum; {HINT}"
    )


def test_duplicate_image_ids_are_refused_when_written_and_when_read(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_store(path, 8)
    with pytest.raises(DataError, match="'im3': duplicate image id"):
        with RegionStoreWriter(tmp_path / "w.h5", DIM, "float32") as writer:
            for i in (0, 1, 2, 3, 3):
                writer.add(f"im{i}", np.ones((1, DIM)), np.array([[0, 0, 1, 1]]), 1, 1)
    with h5py.File(path, "r+") as f:  # a crafted store: the id and its checksum both say im3
        f["image_ids"][6] = "im3"
        f["image_ids_crc32"][6] = zlib.crc32(b"im3")
    with pytest.raises(DataError) as err:
        RegionStore(path).image("im0")
    assert str(err.value) == (
        f"region store {path} has a duplicate image id: 'im3' at rows 3 and 6; an id must name one image: {HINT}"
    )


def test_a_store_without_checksums_still_reads_and_damage_that_reads_as_nan_is_caught(tmp_path: Path) -> None:
    features = write_store(tmp_path / "new.h5")
    path = without_checksums(tmp_path / "new.h5", tmp_path / "old.h5")
    store = RegionStore(path)
    assert not store.checksummed and not store.ids_checksummed
    with pytest.warns(UncheckedStoreWarning) as warned:
        for i in (0, 30, 59):
            np.testing.assert_array_equal(store.image(f"im{i}").features, features[i])
    assert [str(w.message) for w in warned] == [
        f"region store {path} has no checksums of its image ids or features: they are read unchecked; {HINT} "
        "to add them"
    ]
    store.close()  # HDF5 would share the open file, and its cached chunks, with the next RegionStore
    damage(path, int(store.offsets[30]))
    with (
        pytest.warns(UncheckedStoreWarning),
        pytest.raises(
            DataError,
            match=re.escape(
                f"region store {path} is corrupt: the features of image 'im30' "
                "(row 30) hold NaN or inf, which the writer never stores; rerun"
            ),
        ),
    ):
        _ = RegionStore(path).image("im30").features


def test_a_store_without_id_checksums_reads_with_a_warning_and_still_refuses_bad_ids(tmp_path: Path) -> None:
    features = write_store(tmp_path / "new.h5", 8)
    path = without_checksums(tmp_path / "new.h5", tmp_path / "old.h5", keep_filters=True)
    store = RegionStore(path)
    assert store.checksummed and not store.ids_checksummed
    with pytest.warns(UncheckedStoreWarning, match=re.escape(f"{path} has no checksums of its image ids: they")):
        np.testing.assert_array_equal(store.image("im3").features, features[3])
    store.close()
    flip(path, b"im3", b"\xff\xfe3")  # invalid UTF-8 is still one line without the checksums
    with pytest.warns(UncheckedStoreWarning), pytest.raises(DataError) as err:
        read_ids(path)
    assert str(err.value) == (
        f"region store {path} is corrupt: the image id at row 3 (b'\\xff\\xfe3') is not UTF-8; {HINT}"
    )
    with h5py.File(path, "r+") as f:
        f["image_ids"][3] = "im5"
    with (
        pytest.warns(UncheckedStoreWarning),
        pytest.raises(DataError, match="duplicate image id: 'im5' at rows 3 and 5"),
    ):
        read_ids(path)
