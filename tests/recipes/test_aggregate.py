"""experiments.aggregate: mean and sample standard deviation over run folders, by hand."""

import json

import pytest

from experiments.aggregate import aggregate, format_rows, main, read_runs


def write(folder, metrics):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_mean_and_spread_over_runs(tmp_path, capsys):
    runs = [
        write(
            tmp_path / f"s{i}",
            {"test/bi/rsum": v, "test/bi/t2i_r1": r, "test/rerank@20/rsum": v + 10, "train/loss": 1.0},
        )
        for i, (v, r) in enumerate([(500.0, 60.0), (510.0, 62.0), (520.0, 70.0)])
    ]
    summary = aggregate(read_runs(runs))
    assert summary["test/bi/rsum"]["mean"] == pytest.approx(510.0)
    assert summary["test/bi/rsum"]["std"] == pytest.approx(10.0)  # sqrt((100 + 0 + 100) / 2)
    assert summary["test/bi/t2i_r1"]["std"] == pytest.approx(5.2915, rel=1e-4)  # sqrt((16 + 4 + 36) / 2)
    assert "train/loss" not in summary
    table = format_rows(summary)
    assert "| bi | — | 64.0 ± 5.3 | 510.0 ± 10.0 |" in table
    assert table.index("| bi |") < table.index("| rerank@20 |")
    out = tmp_path / "agg.json"
    main(runs + ["--json", str(out)])
    assert json.loads(out.read_text())["metrics"]["test/rerank@20/rsum"]["values"] == [510.0, 520.0, 530.0]


def test_a_run_without_metrics_is_named(tmp_path):
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SystemExit, match="unfinished"):
        read_runs([str(tmp_path / "unfinished")])
