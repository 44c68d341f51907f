"""The data benchmark on tiny sizes: it builds the store, serves real batches and reports the numbers."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.bench import data


def test_bench_data_reports_throughput_and_memory_and_reuses_its_store(tmp_path: Path, capsys) -> None:
    args = [
        "--images",
        "40",
        "--regions",
        "3",
        "--dim",
        "16",
        "--batch-size",
        "8",
        "--workers",
        "2",
        "--batches",
        "4",
        "--warmup",
        "1",
        "--dir",
        str(tmp_path),
    ]
    data.main(args)
    first = json.loads(capsys.readouterr().out)
    store = Path(first["store"])
    assert store.parent == tmp_path and first["store_bytes"] == store.stat().st_size and first["store_built"]
    assert first["images_per_s"] > 0 and first["seconds"] > 0
    assert first["peak_rss_mb"] >= first["peak_rss_mb_main"] > 0 and len(first["peak_rss_mb_workers"]) == 2
    assert first["batch_features_dtype"] == "float16" and first["captions"] == 200
    assert first["goal"] == ">= 2000 images/s, < 2 GB" and isinstance(first["meets_goal"], bool)
    assert first["page_cache"] == "as found"
    assert first["command"] == "python -m experiments.bench data " + " ".join(args) and first["commit"]
    assert first["date"] and first["machine"]["cores"] > 0
    written = store.stat().st_mtime_ns
    data.main(args + ["--cold"])  # the store read from the disk: evicted from the page cache first
    second = json.loads(capsys.readouterr().out)
    assert second["store_built"] is False and store.stat().st_mtime_ns == written
    assert second["page_cache"] == "evicted" and second["images_per_s"] > 0
