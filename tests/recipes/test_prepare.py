"""`python -m experiments.prepare regions`: end to end on a TSV file and a .npz folder, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from retrerank.data.stores.region_store import RegionStore, partial_path
from tests.data.test_converters import check_store, detection, npz_detection, write_tsv

ROOT = Path(__file__).resolve().parents[2]


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.prepare", "regions", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prepare_tsv_writes_the_store_and_prints_a_summary(tmp_path: Path) -> None:
    dets = [detection(i) for i in range(6)]
    a, b = write_tsv(tmp_path / "a.tsv", dets[:3]), write_tsv(tmp_path / "b.tsv", dets[3:])
    out = tmp_path / "out" / "regions.h5"
    run = prepare("--format", "tsv", "--input", str(a), str(b), "--output", str(out), "--dtype", "float32")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary == {
        "output": str(out),
        "images": 6,
        "written": 6,
        "resumed": 0,
        "feature_dim": 8,
        "dtype": "float32",
        "bytes": out.stat().st_size,
        "skipped": {},
    }
    check_store(out, dets)
    again = prepare("--format", "tsv", "--input", str(a), "--output", str(out))
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_prepare_strict_error_exits_with_the_message_and_a_rerun_resumes(tmp_path: Path) -> None:
    dets = [detection(i) for i in range(5)]
    path = write_tsv(tmp_path / "a.tsv", dets)
    good = path.read_text()
    lines = good.splitlines()
    path.write_text("\n".join(lines[:3] + ["1003\t640\t480"] + lines[4:]) + "\n")
    out = tmp_path / "regions.h5"
    run = prepare("--format", "tsv", "--input", str(path), "--output", str(out), "--dtype", "float32")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"data error: {path} line 4: expected 6 tab-separated fields")
    assert partial_path(out).exists() and not out.exists()
    path.write_text(good)
    rerun = prepare("--format", "tsv", "--input", str(path), "--output", str(out), "--dtype", "float32")
    assert rerun.returncode == 0, rerun.stderr
    assert {k: json.loads(rerun.stdout)[k] for k in ("images", "written", "resumed")} == {
        "images": 5,
        "written": 2,
        "resumed": 3,
    }
    check_store(out, dets)


def test_prepare_lenient_npz_folder_skips_and_reports_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "npz"
    dets = [npz_detection(folder, i, i % 2) for i in range(4)]
    np.savez(
        folder / "nan.npz", features=np.full((2, 8), np.nan, np.float32), boxes=np.zeros((2, 4)), image_w=10, image_h=10
    )
    out = tmp_path / "regions.h5"
    strict = prepare("--format", "npz", "--input", str(folder), "--output", str(out), "--quiet")
    assert strict.returncode == 1
    assert f"data error: {folder / 'nan.npz'}: image 'nan': non-finite features" in strict.stderr
    partial_path(out).unlink()
    run = prepare("--format", "npz", "--input", str(folder), "--output", str(out), "--lenient")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["images"], summary["dtype"], summary["skipped"]) == (4, "float16", {"non-finite features": 1})
    assert "nan.npz: image 'nan': non-finite features" in summary["skipped_examples"][0]
    assert "skipped 1 record(s): non-finite features" in run.stderr
    check_store(out, dets)
    assert RegionStore(out).dtype == np.float16
