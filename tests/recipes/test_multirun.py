"""experiments.multirun: one config over seeds and a grid, then the aggregate of the runs."""

import json
import statistics

import pytest
from omegaconf import OmegaConf

from experiments import multirun
from retrerank.config import ConfigError


def test_grid_points_are_every_combination_in_order():
    assert multirun.grid_points(["a.x=1,2", "b=z"]) == [["a.x=1", "b=z"], ["a.x=2", "b=z"]]
    assert multirun.grid_points([]) == [[]]
    with pytest.raises(ConfigError, match="key=value1,value2"):
        multirun.grid_points(["a.x"])


def test_run_names_say_what_varies():
    assert multirun.run_name(["optim.lr=0.001", "eval.rerank_ks=[5]"], 2) == "lr=0.001_rerank_ks=-5-_seed2"
    assert multirun.run_name([], 0) == "seed0"


def test_print_commands_lists_one_run_per_seed_and_value(tmp_path, capsys):
    multirun.main(
        [
            "--seeds",
            "0",
            "1",
            "--grid",
            "optim.lr=1e-4,2e-4",
            "--name",
            "g",
            "--print-commands",
            f"output_dir={tmp_path}",
            "trainer.max_steps=3",
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("python -m experiments.run ") for line in lines)
    assert "optim.lr=1e-4 seed=1 data.synthetic.seed=1" in lines[1] and lines[1].endswith("name=lr=1e-4_seed1")
    assert not (tmp_path / "g").exists()  # nothing ran


def test_a_bad_grid_value_stops_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        multirun.main(["--seeds", "0", "--grid", "trainer.max_steps=3,x", f"output_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_multirun_runs_each_seed_and_writes_mean_and_std(tiny_bert_dir, tmp_path, capsys):
    from tests.adapters.test_adapter_system import SMALL

    args = [
        f"model.backbone={tiny_bert_dir}",
        f"data.root={tmp_path / 'data'}",
        f"output_dir={tmp_path}",
        *[s for s in SMALL if not s.startswith("adapters.")],
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    ]
    group = multirun.main(["--seeds", "0", "1", "--name", "g", *args])
    runs = [json.loads((group / name / "metrics.json").read_text()) for name in ("seed0", "seed1")]
    saved = OmegaConf.load(group / "seed1" / "config.yaml")
    assert (saved.seed, saved.data.synthetic.seed) == (1, 1)
    report = json.loads((group / "aggregate.json").read_text())["(config)"]
    entry = report["metrics"]["test/bi/rsum"]
    values = [run["test/bi/rsum"] for run in runs]
    assert entry["values"] == values
    assert entry["mean"] == pytest.approx(statistics.fmean(values))
    assert entry["std"] == pytest.approx(statistics.stdev(values))
    table = (group / "aggregate.md").read_text()
    assert f"{entry['mean']:.1f} ± {entry['std']:.1f}" in table and table in capsys.readouterr().out
    with pytest.raises(ConfigError, match="exists"):  # a group is never run into twice by accident
        multirun.main(["--seeds", "0", "1", "--name", "g", *args])
    # --continue keeps the finished runs (nothing retrained) and aggregates again
    stamps = [(group / n / "metrics.json").stat().st_mtime_ns for n in ("seed0", "seed1")]
    multirun.main(["--seeds", "0", "1", "--name", "g", "--continue", *args])
    assert stamps == [(group / n / "metrics.json").stat().st_mtime_ns for n in ("seed0", "seed1")]
