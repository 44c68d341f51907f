import json

import pytest

from experiments.bench import rerank


def test_ideal_speedup_counts_pairs():
    # 1000 x 5000 pairs against 20 candidates for each of 6000 queries
    assert rerank.ideal_speedup(1000, 5000, 20) == pytest.approx(5_000_000 / 120_000)


def test_rerank_bench_on_a_generated_store_reports_cost_against_the_ideal(tiny_bert_dir, tmp_path, capsys):
    row = rerank.main(
        [
            "--images",
            "10",
            "--captions-per-image",
            "2",
            "--k",
            "4",
            "--regions",
            "3",
            "--dim",
            "8",
            "--dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--repeats",
            "2",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
        ]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == row
    assert (row["benchmark"], row["images"], row["captions"], row["k"], row["device"]) == ("rerank", 10, 20, 4, "cpu")
    assert row["ideal_speedup"] == round(10 * 20 / (4 * 30), 3)
    # two interleaved repeats: the speed-up is the mean of the two paired ones, and the ratio of the
    # median (mean) seconds lies between them
    assert row["repeats"] == 2 and row["speedup_min"] <= row["speedup"] <= row["speedup_max"]
    assert row["speedup"] == pytest.approx((row["speedup_min"] + row["speedup_max"]) / 2, abs=1e-3)
    ratio = row["cross_all_seconds"] / row["rerank_seconds"]
    assert row["speedup_min"] * 0.95 <= ratio <= row["speedup_max"] * 1.05  # seconds are rounded
    assert row["fraction_of_ideal"] == pytest.approx(row["speedup"] / row["ideal_speedup"], rel=1e-2)
    assert 0 < row["index_seconds"] < row["bi_seconds"] and row["index_seconds"] < row["rerank_seconds"]
    assert "bi_rsum" not in row  # an untrained model's recall means nothing


def test_rerank_bench_on_a_run_repeats_its_test_metrics(tiny_bert_dir, tmp_path, capsys):
    """One pipeline: the benchmark's rsum of each method is the run's own test result."""
    from experiments.run import main as run
    from tests.adapters.test_adapter_system import SMALL

    overrides = [s for s in SMALL if not s.startswith(("adapters.", "eval.cross_all"))]
    run_dir = run(
        [
            f"model.backbone={tiny_bert_dir}",
            f"data.root={tmp_path / 'data'}",
            f"output_dir={tmp_path}",
            "name=tiny",
            *overrides,
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = rerank.main(
        ["--checkpoint", str(run_dir), "--data-root", str(tmp_path / "data"), "--k", "5", "--device", "cpu"]
    )
    assert (row["images"], row["captions"]) == (12, 60)
    for method in ("bi", "rerank@5", "cross_all"):
        assert row[f"{method}_rsum"] == round(metrics[f"test/{method}/rsum"], 2)
    with pytest.raises(ValueError, match="only eval.key=value"):
        rerank.main(["--checkpoint", str(run_dir), "model.join_layer=0"])
