"""experiments.multirun: one config over seeds and a grid, then the aggregate of the runs."""

import json
import statistics

import pytest
from omegaconf import OmegaConf

from experiments import multirun
from retrerank.config import ConfigError, load, to_yaml


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


def finished(folder, overrides, rsum=500.0):
    """A run folder as experiments.run leaves it (its resolved config and metrics), without training."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(load(None, overrides)))
    (folder / "metrics.json").write_text(json.dumps({"test/bi/rsum": rsum, "test/bi/t2i_r1": 60.0}))


def test_a_group_continued_with_another_budget_is_refused_not_averaged(tmp_path):
    group = tmp_path / "g"
    finished(group / "seed0", ["seed=0", "data.synthetic.seed=0", "trainer.max_steps=4"])
    finished(group / "seed1", ["seed=1", "data.synthetic.seed=1", "trainer.max_steps=300"])
    args = ["--seeds", "0", "1", "--name", "g", "--aggregate-only", f"output_dir={tmp_path}"]
    with pytest.raises(ConfigError) as refused:
        multirun.main(args)
    assert str(refused.value).startswith(
        f"the runs' configs differ, so their mean would mix experiments: trainer.max_steps (4 in {group / 'seed0'}; "
        f"300 in {group / 'seed1'})"
    )
    assert not (group / "aggregate.json").exists() and not (group / "aggregate.md").exists()


def test_the_grid_keys_may_differ_across_the_group_and_nothing_else(tmp_path, capsys):
    group = tmp_path / "g"
    for lr in ("0.001", "0.002"):
        for seed in (0, 1):
            finished(group / f"lr={lr}_seed{seed}", [f"optim.lr={lr}", f"seed={seed}", f"data.synthetic.seed={seed}"])
    args = ["--seeds", "0", "1", "--grid", "optim.lr=0.001,0.002", "--name", "g", "--aggregate-only"]
    multirun.main(args + [f"output_dir={tmp_path}"])
    report = json.loads((group / "aggregate.json").read_text())
    assert list(report) == ["optim.lr=0.001", "optim.lr=0.002"]
    assert report["optim.lr=0.002"]["metrics"]["test/bi/rsum"]["values"] == [500.0, 500.0]
    # both seeds of one grid value at another budget: each grid value is one config, the group is not
    for seed in (0, 1):
        (group / f"lr=0.002_seed{seed}" / "config.yaml").write_text(
            to_yaml(load(None, ["optim.lr=0.002", f"seed={seed}", "trainer.max_steps=300"]))
        )
    (group / "aggregate.json").unlink()
    with pytest.raises(ConfigError, match=r"max_steps \(100 in .*; 300 in .*--allow-different trainer\.max_steps$"):
        multirun.main(args + [f"output_dir={tmp_path}"])
    assert not (group / "aggregate.json").exists()


def test_continue_refuses_a_group_whose_finished_runs_have_another_config_before_training(tmp_path, monkeypatch):
    import experiments.run

    def no_training(argv):
        raise AssertionError(f"trained {argv}")

    monkeypatch.setattr(experiments.run, "main", no_training)
    group = tmp_path / "g"
    for seed in (0, 1):
        finished(group / f"seed{seed}", [f"seed={seed}", f"data.synthetic.seed={seed}", "trainer.max_steps=4"])
    args = ["--seeds", "0", "1", "--name", "g", "--continue", f"output_dir={tmp_path}"]
    multirun.main(args + ["trainer.max_steps=4"])  # the same config: both kept, nothing trained
    (group / "aggregate.json").unlink()
    with pytest.raises(ConfigError) as refused:
        multirun.main(["--seeds", "0", "1", "2", *args[3:], "trainer.max_steps=300"])
    assert str(refused.value) == (
        f"{group / 'seed0'} was run with another config than this command gives it: trainer.max_steps "
        "(4 in the run; 300 in this command); give the same config and overrides, or start another group"
    )
    assert not (group / "seed2").exists() and not (group / "aggregate.json").exists()
