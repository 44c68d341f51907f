import json

import pytest

from experiments.bench import adapterdrop
from experiments.bench.emit import emit

PROVENANCE = {"command", "commit", "date", "machine"}


def test_every_printed_measurement_records_what_made_it(capsys):
    row = emit({"measurement": "x", "ms": 1.5}, "data", ["--images", "40", "--dir", "runs/a b"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == row and set(row) == {"measurement", "ms"} | PROVENANCE
    assert row["command"] == "python -m experiments.bench data --images 40 --dir 'runs/a b'"
    assert row["commit"] and row["date"][:2] == "20"
    assert {"cpu", "cores", "threads", "gpu", "torch"} <= set(row["machine"])


def test_adapterdrop_bench_prints_each_measurement_with_its_interleaved_baseline(capsys):
    rows = adapterdrop.main(
        [
            "--batch-size",
            "1",
            "--words",
            "2",
            "--regions",
            "2",
            "--tasks",
            "2",
            "--repeats",
            "1",
            "--inference-repeats",
            "3",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert rows == [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["measurement"] for r in rows] == [
        "train_step_drop5_vs_drop0",
        "parallel_2_tasks_shared5_vs_shared0",
        "inference_adapters_vs_plain",
        "inference_adapters_drop5_vs_plain",
    ]
    for r in rows:
        assert r["baseline_ms"] > 0 and r["candidate_ms"] > 0
        assert abs(r["ratio"] - r["candidate_ms"] / r["baseline_ms"]) < 0.01
        assert r["layers"] == 12 and r["hidden"] == 768 and r["threads"] == 1 and r["clock"] == "wall"
        assert PROVENANCE <= set(r)
        assert r["command"].startswith("python -m experiments.bench adapterdrop --batch-size 1")
        assert r["machine"]["threads"] == 1
        low, high = r["overhead_range_pct"]
        assert low <= r["overhead_iqr_pct"][0] <= r["overhead_median_pct"] <= r["overhead_iqr_pct"][1] <= high
    assert [r["pairs"] for r in rows] == [1, 1, 3, 3]
    # both inference candidates are paired with the same baseline runs
    assert rows[2]["baseline_ms"] == rows[3]["baseline_ms"]


def test_adapterdrop_paired_stats_are_percent_overheads_of_paired_runs():
    stats = adapterdrop.paired_stats([1.0, 2.0, 1.0, 4.0, 1.0], [1.1, 2.0, 0.9, 4.4, 1.3])
    assert stats == {
        "overhead_median_pct": 10.0,
        "overhead_iqr_pct": [0.0, 10.0],
        "overhead_range_pct": [-10.0, 30.0],
        "pairs": 5,
    }


def test_adapterdrop_interleaves_the_configurations_and_reverses_every_other_round():
    calls = []
    times = adapterdrop.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu", warmup=1, repeats=3
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times.values()] == [3, 3]
    adapterdrop.interleaved({"a": lambda: calls.append("a")}, "cpu", warmup=0, repeats=2, clock="process")
    assert calls[-2:] == ["a", "a"]


def test_cached_rerank_bench_trains_both_models_and_compares_them(tiny_bert_dir, tmp_path, capsys):
    from experiments.bench import cached_rerank
    from tests.adapters.test_adapter_system import SMALL

    overrides = [s for s in SMALL if not s.startswith("adapters.")] + [
        f"model.backbone={tiny_bert_dir}",
        f"data.root={tmp_path / 'data'}",
        "eval.rerank_ks=[5]",
    ]
    args = [
        "--output-dir",
        str(tmp_path / "bench"),
        "--rerank-top",
        "5",
        "--k",
        "3",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        *overrides,
    ]
    cached_rerank.main(args)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    full, late, summary = rows
    assert (full["join_layer"], late["join_layer"]) == (0, 1)  # the tiny model has 2 blocks: L/2 = 1
    assert "cache_bytes_per_image" in late and "cache_bytes_per_image" not in full
    for key in ("t2i_rerank_ms_per_query", "i2t_rerank_ms_per_query"):
        assert full[key] > 0 and late[key] > 0
    metrics = json.loads((tmp_path / "bench" / "join1" / "metrics.json").read_text())
    assert summary["rsum_m1"] == metrics["test/rerank@5/rsum"]
    assert summary["t2i_rerank_speedup"] == round(full["t2i_rerank_ms_per_query"] / late["t2i_rerank_ms_per_query"], 3)
    # --reuse measures the finished runs again without training
    written = {run: (tmp_path / "bench" / run / "metrics.json").stat().st_mtime_ns for run in ("join0", "join1")}
    cached_rerank.main(args + ["--reuse"])
    assert written == {run: (tmp_path / "bench" / run / "metrics.json").stat().st_mtime_ns for run in written}


def test_search_bench_measures_each_kind_in_its_own_process(capsys):
    pytest.importorskip("faiss")
    from experiments.bench import search

    search.main(["--sizes", "300", "--dim", "8", "--queries", "20", "--k", "5", "--nprobe", "69"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in rows] == ["exact", "faiss_flat", "faiss_ivf"]
    # the command the user ran, not the child process's
    assert all(
        r["command"] == "python -m experiments.bench search --sizes 300 --dim 8 --queries 20 --k 5 --nprobe 69"
        and PROVENANCE <= set(r)
        for r in rows
    )
    assert all(r["corpus"] == 300 and r["peak_rss_mb"] > 0 and r["search_s"] >= 0 for r in rows)
    assert rows[2]["nlist"] == 69 and rows[2]["recall_vs_exact"] == 1.0  # probing all 69 lists is exact


def test_eval_bench_runs_the_full_evaluation_on_a_generated_store(tiny_bert_dir, tmp_path, capsys):
    from experiments.bench import evaluation as bench_eval

    row = bench_eval.main(
        [
            "--images",
            "12",
            "--regions",
            "3",
            "--dim",
            "8",
            "--captions",
            "2",
            "--dir",
            str(tmp_path),
            "--methods",
            "bi",
            "rerank@4",
            "--device",
            "cpu",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
        ]
    )
    assert (row["images"], row["captions"]) == (12, 24)
    assert row["rerank@4/t2i_ms_per_query"] > 0 and row["peak_rss_mb"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == row


def test_eval_bench_runs_under_bf16_autocast(tiny_bert_dir, tmp_path):
    """--precision bf16 is the mixed-precision inference path: every step (encoding, exact top-k,
    reranking) must accept the bf16 activations that autocast makes."""
    from experiments.bench import evaluation as bench_eval

    row = bench_eval.main(
        [
            "--images",
            "12",
            "--regions",
            "3",
            "--dim",
            "8",
            "--captions",
            "2",
            "--dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--precision",
            "bf16",
            "--methods",
            "bi",
            "rerank@4",
            # an override right after --methods stays one
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
        ]
    )
    assert row["precision"] == "bf16" and row["rerank@4/i2t_ms_per_query"] > 0
