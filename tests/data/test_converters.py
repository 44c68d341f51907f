"""Converters into a RegionStore: bottom-up-attention TSV, .npz and .pt folders; bad records; resume.

The fixtures are written here in the real formats (TSV exactly as generate_tsv.py writes it).
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from retrerank.data.errors import BadRecords, DataError
from retrerank.data.stores.converters import convert_regions
from retrerank.data.stores.region_store import RegionStore, partial_path

DIM = 8
FIELDNAMES = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]


def detection(i: int, regions: int | None = None, dim: int = DIM) -> dict:
    """Image i as a detector gives it: pixel boxes in a 640 x 480 image, float32 features."""
    rng = np.random.default_rng(100 + i)
    r = regions if regions is not None else i % 3 + 2
    xy = rng.random((r, 2)) * [320, 240]
    return {
        "image_id": str(1000 + i),
        "image_w": 640,
        "image_h": 480,
        "num_boxes": r,
        "boxes": np.concatenate([xy, xy + [300, 200]], axis=1).astype(np.float32),
        "features": rng.random((r, dim), dtype=np.float32),
    }


def tsv_row(d: dict) -> dict:
    return {
        **d,
        "boxes": base64.b64encode(d["boxes"].tobytes()).decode(),
        "features": base64.b64encode(d["features"].tobytes()).decode(),
    }


def write_tsv(path: Path, detections: list[dict]) -> Path:
    """As generate_tsv.py: csv.DictWriter, tab-delimited, no header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, delimiter="\t", fieldnames=FIELDNAMES)
        for d in detections:
            writer.writerow(tsv_row(d))
    return path


def check_store(path: Path, detections: list[dict]) -> None:
    store = RegionStore(path)
    assert store.ids == [d["image_id"] for d in detections]
    for d in detections:
        im = store.image(d["image_id"])
        np.testing.assert_array_equal(im.features, d["features"].astype(store.dtype))
        np.testing.assert_allclose(im.boxes, d["boxes"] / [640, 480, 640, 480], rtol=1e-6)
        assert (im.width, im.height) == (640, 480)


def test_tsv_files_convert_to_a_store(tmp_path: Path) -> None:
    dets = [detection(i) for i in range(7)]
    inputs = [write_tsv(tmp_path / "a.tsv", dets[:4]), write_tsv(tmp_path / "b.tsv", dets[4:])]
    summary = convert_regions("tsv", inputs, tmp_path / "out.h5", "float32", progress=False)
    assert summary["images"] == summary["written"] == 7 and summary["resumed"] == 0
    assert summary["feature_dim"] == DIM and summary["skipped"] == {}
    assert summary["bytes"] == (tmp_path / "out.h5").stat().st_size
    check_store(tmp_path / "out.h5", dets)


def broken_tsv(tmp_path: Path) -> tuple[Path, list[dict], dict[str, str]]:
    """One good image per line 1, 3, 5, 7 and a broken line between; the last line cut off."""
    good = [detection(i) for i in range(4)]
    row = tsv_row(detection(9))
    line = lambda r: "\t".join(str(r[k]) for k in FIELDNAMES)  # noqa: E731
    lines = {
        "wrong field count": "\t".join(str(row[k]) for k in FIELDNAMES[:5]),
        "bad base64": line({**row, "image_id": "b64", "features": row["features"][:-6] + "@@@@=="}),
        "size mismatch": line({**row, "image_id": "size", "num_boxes": 3}),
        "wrong feature width": line(tsv_row({**detection(10, dim=6), "image_id": "narrow"})),
        "duplicate image id": line(tsv_row(good[0])),
        "image without regions": line({**row, "image_id": "empty", "num_boxes": 0, "boxes": "", "features": ""}),
    }
    text = []
    for d, bad_line in zip(good + [None] * 2, lines.values()):
        if d is not None:
            text.append(line(tsv_row(d)))
        text.append(bad_line)
    path = tmp_path / "broken.tsv"
    # the cut-off last line: an interrupted extraction
    path.write_text("\n".join(text) + "\n" + line(tsv_row(detection(11)))[:-7])
    messages = {
        "wrong field count": r"broken\.tsv line 2: expected 6 tab-separated fields .* found 5",
        "bad base64": r"broken\.tsv line 4 \(image 'b64'\): field features is not valid base64",
        "size mismatch": r"broken\.tsv line 6 \(image 'size'\): boxes hold 8 floats, expected num_boxes\*4 = 12",
        "wrong feature width": r"broken\.tsv line 8: image 'narrow': wrong feature width: expected 8, found 6",
        "duplicate image id": r"broken\.tsv line 9: image '1000': duplicate image id",
        "image without regions": r"broken\.tsv line 10 \(image 'empty'\): image without regions",
        "truncated last line": r"broken\.tsv line 11 \(image '1011'\): truncated last line",
    }
    return path, good, messages


def test_bad_tsv_lines_stop_a_strict_run_naming_file_and_line(tmp_path: Path) -> None:
    path, good, messages = broken_tsv(tmp_path)
    lines = path.read_text().split("\n")
    bad_lines = {reason: int(message.split(" line ")[1].split()[0].rstrip(":")) for reason, message in messages.items()}
    for reason, message in messages.items():
        # this bad line alone among the good ones: the others blanked (blank lines are skipped), numbers kept
        kept = [
            line if n not in bad_lines.values() or n == bad_lines[reason] else "" for n, line in enumerate(lines, 1)
        ]
        single = tmp_path / reason / "broken.tsv"
        single.parent.mkdir()
        single.write_text("\n".join(kept))
        with pytest.raises(DataError, match=message):
            convert_regions("tsv", [single], tmp_path / reason / "out.h5", progress=False)


def test_bad_tsv_lines_are_skipped_and_counted_when_lenient(tmp_path: Path) -> None:
    path, good, messages = broken_tsv(tmp_path)
    bad = BadRecords(strict=False, keep=10)
    summary = convert_regions("tsv", [path], tmp_path / "out.h5", "float32", bad, progress=False)
    assert summary["skipped"] == {reason: 1 for reason in messages}
    assert summary["written"] == 4
    check_store(tmp_path / "out.h5", good)
    assert any("broken.tsv line 6" in m for m in bad.examples)


def test_a_run_stopped_by_a_bad_line_resumes_after_the_fix(tmp_path: Path) -> None:
    dets = [detection(i) for i in range(9)]
    path = write_tsv(tmp_path / "a.tsv", dets)
    lines = path.read_text().splitlines()
    broken = lines[:6] + [lines[6].replace("\t", "\t\t", 1)] + lines[7:]
    path.write_text("\n".join(broken) + "\n")
    out = tmp_path / "out.h5"
    with pytest.raises(DataError, match=r"a\.tsv line 7: expected 6 tab-separated fields"):
        convert_regions("tsv", [path], out, "float32", progress=False)
    assert partial_path(out).exists() and not out.exists()
    with pytest.raises(DataError, match="interrupted prepare"):
        RegionStore(out)
    path.write_text("\n".join(lines) + "\n")  # fixed
    summary = convert_regions("tsv", [path], out, "float32", progress=False)
    assert (summary["resumed"], summary["written"], summary["images"]) == (6, 3, 9)
    check_store(out, dets)


def npz_detection(folder: Path, i: int, style: int) -> dict:
    d = detection(i)
    folder.mkdir(exist_ok=True)
    if style == 0:
        np.savez(
            folder / f"{d['image_id']}.npz",
            features=d["features"],
            boxes=d["boxes"],
            image_w=640,
            image_h=480,
            tags=np.array(["dog", "grass"]),
        )
    else:
        np.savez(
            folder / f"{d['image_id']}.npz", x=d["features"], bbox=d["boxes"], w=640, h=480, objects=np.array(["cat"])
        )
    return d


def test_npz_folder_with_either_key_names_converts(tmp_path: Path) -> None:
    dets = [npz_detection(tmp_path / "npz", i, i % 2) for i in range(5)]
    summary = convert_regions("npz", [tmp_path / "npz"], tmp_path / "out.h5", "float32", progress=False)
    assert summary["images"] == 5
    check_store(tmp_path / "out.h5", dets)
    store = RegionStore(tmp_path / "out.h5")
    assert store.image("1000").tags == ("dog", "grass") and store.image("1001").tags == ("cat",)


def test_npz_without_image_size_uses_boxes_that_are_already_normalised(tmp_path: Path) -> None:
    (tmp_path / "npz").mkdir()
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0, 0, 1, 1]], np.float32)
    np.savez(tmp_path / "npz" / "n1.npz", features=np.ones((2, DIM), np.float32), boxes=boxes)
    np.savez(tmp_path / "npz" / "p1.npz", features=np.ones((2, DIM), np.float32), boxes=boxes * 100)
    with pytest.raises(DataError, match=r"p1\.npz: no image_w/image_h \(or w/h\) to normalise pixel boxes"):
        convert_regions("npz", [tmp_path / "npz"], tmp_path / "strict.h5", progress=False)
    bad = BadRecords(strict=False)
    convert_regions("npz", [tmp_path / "npz"], tmp_path / "out.h5", "float32", bad, progress=False)
    assert dict(bad.counts) == {"missing image size": 1}
    im = RegionStore(tmp_path / "out.h5").image("n1")
    np.testing.assert_array_equal(im.boxes, boxes)
    assert (im.width, im.height) == (0, 0)  # unknown


def test_bad_npz_files_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "npz"
    good = [npz_detection(folder, i, 0) for i in range(2)]
    (folder / "garbage.npz").write_bytes(b"not a zip file")
    np.savez(folder / "nobox.npz", features=np.ones((2, DIM), np.float32), image_w=1, image_h=1)
    np.savez(
        folder / "wide.npz", features=np.ones((2, DIM + 1), np.float32), boxes=np.ones((2, 4)), image_w=1, image_h=1
    )
    for name, message in (
        ("garbage", r"garbage\.npz: not a readable \.npz file"),
        ("nobox", r"nobox\.npz: no boxes \(or bbox\) in the file"),
        ("wide", r"wide\.npz: image 'wide': wrong feature width: expected 8, found 9"),
    ):
        with pytest.raises(DataError, match=message):
            convert_regions(
                "npz", [folder / "1000.npz", folder / f"{name}.npz"], tmp_path / f"{name}.h5", progress=False
            )
    bad = BadRecords(strict=False)
    summary = convert_regions("npz", [folder], tmp_path / "out.h5", "float32", bad, progress=False)
    assert summary["skipped"] == {"unreadable file": 1, "missing key": 1, "wrong feature width": 1}
    check_store(tmp_path / "out.h5", good)


def test_pt_folder_converts_and_bad_pt_files_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "pt"
    folder.mkdir()
    dets = [detection(i) for i in range(3)]
    for d in dets:
        features = torch.from_numpy(d["features"]).to(torch.bfloat16)  # no numpy dtype: converted to float32
        torch.save(
            {
                "features": features,
                "boxes": torch.from_numpy(d["boxes"]),
                "image_w": 640,
                "image_h": 480,
                "tags": ["person"],
            },
            folder / f"{d['image_id']}.pt",
        )
    torch.save([1, 2], folder / "list.pt")
    (folder / "cut.pt").write_bytes((folder / "1000.pt").read_bytes()[:100])
    for name, message in (
        ("list", r"list\.pt: expected a dict of tensors, found list"),
        ("cut", r"cut\.pt: not a readable \.pt file"),
    ):
        with pytest.raises(DataError, match=message):
            convert_regions("pt", [folder / f"{name}.pt"], tmp_path / f"{name}.h5", progress=False)
    bad = BadRecords(strict=False)
    summary = convert_regions("pt", [folder], tmp_path / "out.h5", "float32", bad, progress=False)
    assert summary["images"] == 3 and summary["skipped"] == {"unreadable file": 2}
    store = RegionStore(tmp_path / "out.h5")
    for d in dets:
        im = store.image(d["image_id"])
        want = torch.from_numpy(d["features"]).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(im.features, want)
        np.testing.assert_allclose(im.boxes, d["boxes"] / [640, 480, 640, 480], rtol=1e-6)
        assert im.tags == ("person",)


def test_inputs_without_any_usable_image_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.npz files in .*empty"):
        convert_regions("npz", [tmp_path / "empty"], tmp_path / "out.h5", progress=False)
    (tmp_path / "bad.tsv").write_text("x\ty\n")
    with pytest.raises(DataError, match=r"no usable images in .*bad\.tsv \(skipped 1 record\(s\): wrong field count"):
        convert_regions(
            "tsv", [tmp_path / "bad.tsv"], tmp_path / "out.h5", bad=BadRecords(strict=False), progress=False
        )
