"""RegionStore: round trip, layout, resume after an interrupted write, lazy StoredImage in DataLoader
workers, bad images, and missing / corrupt / incomplete files."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retrerank.data.collate import collate_images
from retrerank.data.errors import BadRecords, DataError
from retrerank.data.stores.region_store import RegionStore, RegionStoreWriter, StoredImage, partial_path

DIM = 8
ROOT = Path(__file__).resolve().parents[2]


def sample(i: int, dim: int = DIM) -> dict:
    """Image i: i % 4 + 1 regions, pixel boxes inside a 200 x 100 image, tags on even images."""
    rng = np.random.default_rng(i)
    r = i % 4 + 1
    xy = rng.random((r, 2)) * [100, 50]
    return {
        "image_id": f"im{i}",
        "features": rng.standard_normal((r, dim)).astype(np.float32),
        "boxes": np.concatenate([xy, xy + [100, 50]], axis=1).astype(np.float32),
        "width": 200,
        "height": 100,
        "tags": ["dog", "red ball"] if i % 2 == 0 else None,
    }


def write(path: Path, n: int, dtype: str = "float32", **kw) -> list[dict]:
    images = [sample(i) for i in range(n)]
    with RegionStoreWriter(path, DIM, dtype, **kw) as writer:
        for im in images:
            assert writer.add(**im)
    return images


def datasets(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in f} | {"attrs": dict(f.attrs)}


def test_round_trip_keeps_values_ids_sizes_and_normalises_boxes(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    images = write(path, 6)
    store = RegionStore(path)
    assert len(store) == 6 and store.ids == [f"im{i}" for i in range(6)]
    assert store.feature_dim == DIM and store.dtype == np.float32
    assert "im3" in store and "nope" not in store and store.row("im4") == 4
    for im in images:
        stored = store.image(im["image_id"])
        np.testing.assert_array_equal(stored.features, im["features"])
        np.testing.assert_allclose(stored.boxes, im["boxes"] / [200, 100, 200, 100], rtol=1e-6)
        assert stored.boxes.min() >= 0 and stored.boxes.max() <= 1 and stored.boxes.dtype == np.float32
        assert (stored.width, stored.height) == (200, 100)
        assert stored.tags == (("dog", "red ball") if im["tags"] else ())
    features, boxes = store.read(2)
    np.testing.assert_array_equal(features, images[2]["features"])
    assert [im.image_id for im in store.images(["im5", "im1"])] == ["im5", "im1"]
    with pytest.raises(DataError, match=r"image 'nope' is not in region store .*r\.h5"):
        store.image("nope")


def test_float16_store_keeps_float16_and_the_layout_is_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    images = write(path, 5, dtype="float16", batch_images=2)
    stored = RegionStore(path).image("im3")
    assert stored.features.dtype == np.float16
    np.testing.assert_array_equal(stored.features, images[3]["features"].astype(np.float16))
    batch = collate_images(RegionStore(path).images())
    assert batch["features"].dtype == torch.float16 and batch["boxes"].dtype == torch.float32
    assert not partial_path(path).exists()
    with h5py.File(path, "r") as f:
        assert dict(f.attrs) == {
            "format": "retrerank-regions",
            "version": 1,
            "feature_dim": DIM,
            "complete": True,
            "committed": 5,
        }
        counts = [im["features"].shape[0] for im in images]
        assert f["offsets"][:].tolist() == np.concatenate([[0], np.cumsum(counts)]).tolist()
        assert f["features"].shape == (sum(counts), DIM) and f["features"].compression is None
        assert f["features"].chunks[1] == DIM and f["features"].maxshape == (None, DIM)
        assert f["image_ids"].asstr()[:].tolist() == [f"im{i}" for i in range(5)]
        assert f["tags"].asstr()[0] == "dog\tred ball" and f["width"][:].tolist() == [200] * 5
        # the strings' CRC-32s, in filtered datasets of their own (HDF5 cannot filter variable-length data)
        assert f["image_ids_crc32"][:].tolist() == [zlib.crc32(f"im{i}".encode()) for i in range(5)]
        assert f["tags_crc32"][:].tolist() == [zlib.crc32(b"dog\tred ball" if i % 2 == 0 else b"") for i in range(5)]
        assert f["image_ids_crc32"].fletcher32 and f["tags_crc32"].fletcher32


INTERRUPTED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from tests.data.test_region_store import sample, DIM
    from retrerank.data.stores.region_store import RegionStoreWriter
    writer = RegionStoreWriter({path!r}, DIM, "float32", batch_images=3)
    for i in range(7):
        writer.add(**sample(i))
    os._exit(1)  # killed: no close, the 7th image is still buffered
""")


def test_interrupted_write_is_rejected_then_resumed_to_the_same_store(tmp_path: Path) -> None:
    path, clean = tmp_path / "r.h5", tmp_path / "clean.h5"
    run = subprocess.run(
        [sys.executable, "-c", INTERRUPTED.format(root=str(ROOT), path=str(path))], capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr
    assert partial_path(path).exists() and not path.exists()
    with pytest.raises(DataError, match=r"only .*r\.h5\.partial exists \(an interrupted prepare\).*rerun"):
        RegionStore(path)
    # a store left at the final path without complete=True (copied by hand, say) is rejected too
    incomplete = tmp_path / "incomplete.h5"
    incomplete.write_bytes(partial_path(path).read_bytes())
    with pytest.raises(DataError, match=r"incomplete\.h5 is incomplete .*rerun"):
        RegionStore(incomplete)

    with RegionStoreWriter(path, DIM, "float32", batch_images=3) as writer:
        assert writer.resumed == 6 and len(writer) == 6  # two committed batches of 3
        assert writer.has("im5") and not writer.has("im6")
        for i in range(10):
            if not writer.has(f"im{i}"):
                writer.add(**sample(i))
    write(clean, 10, batch_images=3)
    got, want = datasets(path), datasets(clean)
    assert got.keys() == want.keys()
    for name in want:
        if name == "attrs":
            assert got[name] == want[name]
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_an_error_inside_the_writer_keeps_a_resumable_partial(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with pytest.raises(DataError, match="duplicate"):
        with RegionStoreWriter(path, DIM, "float32", batch_images=10) as writer:
            for i in (0, 1, 2, 1):
                writer.add(**sample(i))
    assert not path.exists()
    with RegionStoreWriter(path, DIM, "float32") as writer:
        assert writer.resumed == 3  # the buffered images were committed on the way out
    assert RegionStore(path).ids == ["im0", "im1", "im2"]


def test_a_partial_without_id_checksums_gains_them_on_resume_and_damaged_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    writer = RegionStoreWriter(path, DIM, "float32")
    for i in range(3):
        writer.add(**sample(i))
    writer.abandon()
    with h5py.File(partial_path(path), "r+") as f:  # as a partial started before the id checksums
        del f["image_ids_crc32"], f["tags_crc32"]
    with RegionStoreWriter(path, DIM, "float32") as writer:
        assert writer.resumed == 3
        writer.add(**sample(3))
    store = RegionStore(path)
    assert store.ids_checksummed and store.ids == ["im0", "im1", "im2", "im3"] and store.image("im0").tags
    RegionStoreWriter(tmp_path / "s.h5", DIM, "float32").abandon()
    writer = RegionStoreWriter(tmp_path / "s.h5", DIM, "float32")
    writer.add(**sample(0))
    writer.abandon()
    with h5py.File(partial_path(tmp_path / "s.h5"), "r+") as f:
        f["image_ids"][0] = "im9"
    with pytest.raises(DataError, match=r"cannot resume .*s\.h5\.partial: its image ids are damaged or repeated"):
        RegionStoreWriter(tmp_path / "s.h5", DIM, "float32")


def test_resuming_with_another_feature_width_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    RegionStoreWriter(path, DIM, "float32").abandon()
    with pytest.raises(DataError, match=r"started with feature_dim 8 and dtype float32.*feature_dim 6.*delete"):
        RegionStoreWriter(path, 6, "float32")


def test_stored_image_pickles_as_a_reference_and_reads_lazily(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    images = write(path, 4, dtype="float16")
    stored = RegionStore(path).image("im3")
    data = pickle.dumps(stored)
    assert len(data) < 300 and images[3]["features"].astype(np.float16).tobytes() not in data
    back = pickle.loads(data)
    assert isinstance(back, StoredImage) and (back.image_id, back.row) == ("im3", 3)
    np.testing.assert_array_equal(back.features, stored.features)
    assert pickle.loads(pickle.dumps(RegionStore(path))).ids == RegionStore(path).ids
    assert not hasattr(stored, "__dict__")  # nothing read is kept in the object


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_stored_images_in_dataloader_workers_give_the_same_batches(tmp_path: Path, context: str) -> None:
    path = tmp_path / "r.h5"
    write(path, 12, dtype="float16")
    store = RegionStore(path)
    store.read(0)  # the parent has an open handle before the workers start
    loader = DataLoader(
        store.images(), batch_size=4, num_workers=2, collate_fn=collate_images, multiprocessing_context=context
    )
    batches = list(loader)
    assert len(batches) == 3
    for k, batch in enumerate(batches):
        want = collate_images(store.images()[4 * k : 4 * k + 4])
        for key in ("features", "boxes", "region_mask"):
            assert torch.equal(batch[key], want[key]), key
        assert batch["features"].dtype == torch.float16


def test_bad_images_raise_naming_source_and_image_or_are_counted(tmp_path: Path) -> None:
    good = sample(0)
    nan = good["features"].copy()
    nan[0, 0] = np.nan
    cases = [
        ("duplicate image id", dict(good), r"src line 9: image 'im0': duplicate image id"),
        (
            "wrong feature width",
            dict(good, image_id="w", features=np.ones((1, 6), np.float32)),
            r"image 'w': wrong feature width: expected 8, found 6",
        ),
        (
            "image without regions",
            dict(good, image_id="e", features=np.ones((0, DIM)), boxes=np.ones((0, 4))),
            r"image 'e': image without regions",
        ),
        ("non-finite features", dict(good, image_id="n", features=nan), r"image 'n': non-finite features"),
        (
            "non-finite features",
            dict(good, image_id="big", features=good["features"] * 1e6),
            r"image 'big': non-finite features .*float16 range",
        ),
        (
            "boxes do not match features",
            dict(good, image_id="b", boxes=np.ones((3, 4))),
            r"image 'b': boxes of shape \(3, 4\) for 1 regions",
        ),
    ]
    bad = BadRecords(strict=False)
    with RegionStoreWriter(tmp_path / "lenient.h5", DIM, "float16", bad=bad) as lenient:
        assert lenient.add(**good, source="src line 1")
        for reason, image, message in cases:
            with RegionStoreWriter(tmp_path / f"strict-{reason}.h5", DIM, "float16") as strict:
                if reason == "duplicate image id":
                    strict.add(**good)
                with pytest.raises(DataError, match=message):
                    strict.add(**image, source="src line 9")
                strict.add(**sample(1))  # the store stays usable
            assert lenient.add(**image, source="src line 9") is False
    assert dict(bad.counts) == {
        "duplicate image id": 1,
        "wrong feature width": 1,
        "image without regions": 1,
        "non-finite features": 2,
        "boxes do not match features": 1,
    }
    assert RegionStore(tmp_path / "lenient.h5").ids == ["im0"]


def test_missing_corrupt_foreign_and_inconsistent_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"region store .*none\.h5: the file does not exist; rerun"):
        RegionStore(tmp_path / "none.h5")
    path = tmp_path / "r.h5"
    write(path, 40)
    data = path.read_bytes()
    (tmp_path / "half.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.h5").write_bytes(b"\0" * 64 + data[64:])
    (tmp_path / "text.h5").write_text("image_id\tfeatures\n")
    for name in ("half", "header", "text"):
        with pytest.raises(
            DataError,
            match=rf"region store .*{name}\.h5 is not a readable HDF5 file "
            r"\(truncated or corrupt\?\)",
        ):
            RegionStore(tmp_path / f"{name}.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match=r"other\.h5 is not a retrerank region store \(format attribute None"):
        RegionStore(tmp_path / "other.h5")
    with h5py.File(path, "r+") as f:
        f["offsets"][-1] = 3
    with pytest.raises(DataError, match=r"r\.h5 is inconsistent: offsets do not split the \d+ feature rows"):
        RegionStore(path)
