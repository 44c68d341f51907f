"""experiments.aggregate: mean and sample standard deviation over run folders, by hand; and the runs it refuses
to average (other configs, a folder twice, a damaged metrics.json), each with one line, before writing."""

import json

import pytest

from experiments.aggregate import MetricsError, aggregate, format_rows, main, read_runs
from retrerank.cli import run_main
from retrerank.config import ConfigError, load, to_yaml

METRICS = {"test/bi/rsum": 500.0, "test/bi/t2i_r1": 60.0, "test/rerank@20/rsum": 510.0, "train/loss": 1.0}


def write(folder, metrics, overrides=()):
    """A finished run's folder as experiments.run leaves it: its resolved config and its metrics."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(load(None, list(overrides))))
    (folder / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return str(folder)


def seeds(tmp_path, n=2, metrics=METRICS):
    return [write(tmp_path / f"seed{s}", metrics, [f"seed={s}", f"data.synthetic.seed={s}"]) for s in range(n)]


def line(capsys, argv):
    """What the user sees when the command refuses: exit status 1 and this one line."""
    with pytest.raises(SystemExit) as stop:
        run_main(main, argv)
    assert isinstance(stop.value.code, str) and "\n" not in stop.value.code  # sys.exit(message): status 1
    return stop.value.code


def test_mean_and_spread_over_runs(tmp_path, capsys):
    runs = [
        write(
            tmp_path / f"s{i}",
            {"test/bi/rsum": v, "test/bi/t2i_r1": r, "test/rerank@20/rsum": v + 10, "train/loss": 1.0},
            [f"seed={i}", f"data.synthetic.seed={i}"],
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


def test_seeds_names_paths_and_resume_keys_may_differ(tmp_path, capsys):
    differ = [
        ["seed=0", "data.synthetic.seed=0", "name=a", f"output_dir={tmp_path}/x", "data.root=/data/one"],
        ["seed=1", "data.synthetic.seed=1", "name=b", f"output_dir={tmp_path}/y", "data.root=/data/two"]
        + ["trainer.resume=last", "num_threads=2", "eval.batch_size=7", "logger=tensorboard"],
    ]
    runs = [write(tmp_path / str(i), METRICS, overrides) for i, overrides in enumerate(differ)]
    report = main(runs)
    assert report["metrics"]["test/bi/rsum"]["values"] == [500.0, 500.0] and not report["differ_on_purpose"]


def test_a_4_step_and_a_300_step_run_are_refused_naming_the_budget(tmp_path, capsys):
    a = write(tmp_path / "steps4", METRICS, ["seed=0", "trainer.max_steps=4"])
    b = write(tmp_path / "steps300", METRICS | {"test/bi/rsum": 600.0}, ["seed=1", "trainer.max_steps=300"])
    out = tmp_path / "agg.json"
    assert line(capsys, [a, b, "--json", str(out)]) == (
        f"config error: the runs' configs differ, so their mean would mix experiments: trainer.max_steps "
        f"(4 in {a}; 300 in {b}); aggregate runs of one config (seeds), or name the keys that differ on "
        "purpose: --allow-different trainer.max_steps"
    )
    assert not out.exists() and capsys.readouterr().out == ""  # refused before anything is printed or written


def test_a_synthetic_and_a_coco_run_are_refused_with_every_key_that_differs(tmp_path, capsys):
    a = write(tmp_path / "synthetic", METRICS)
    b = write(tmp_path / "coco", METRICS, ["data.dataset=coco", "eval.rerank_ks=[5,20]", "optim.lr=0.001"])
    message = line(capsys, [a, b])
    assert message.startswith("config error: the runs' configs differ")
    assert f"data.dataset (synthetic in {a}; coco in {b})" in message
    assert f"eval.rerank_ks ([10, 20] in {a}; [5, 20] in {b})" in message
    assert message.endswith("--allow-different data.dataset eval.rerank_ks optim.lr")


def test_allow_different_names_the_keys_of_a_grid(tmp_path, capsys):
    runs = [
        write(tmp_path / f"lr{lr}_seed{s}", METRICS, [f"optim.lr={lr}", f"seed={s}"])
        for lr in (0.001, 0.002)
        for s in (0, 1)
    ]
    with pytest.raises(ConfigError, match=r"optim\.lr \(0\.001 in .*lr0\.001_seed0, .*lr0\.001_seed1; 0\.002 in "):
        main(runs)
    out = tmp_path / "agg.json"
    report = main(runs + ["--allow-different", "optim.lr", "--json", str(out)])
    assert report["metrics"]["test/bi/rsum"]["values"] == [500.0] * 4
    assert "differ on purpose: optim.lr (0.001 in " in capsys.readouterr().out
    assert json.loads(out.read_text())["differ_on_purpose"]["optim.lr"][runs[2]] == 0.002
    main(runs + ["--allow-different", "optim"])  # a whole section
    assert line(capsys, runs + ["--allow-different", "optim.lrr"]).startswith(
        "config error: --allow-different 'optim.lrr' is not a config key or section"
    )


def test_the_same_folder_twice_is_refused_however_it_is_spelled(tmp_path, capsys, monkeypatch):
    a, b = seeds(tmp_path)
    assert line(capsys, [a, b, a]) == (
        f"config error: {a} is given twice: each run counts once in a mean; give every run folder once"
    )
    monkeypatch.chdir(tmp_path)
    assert line(capsys, ["seed0", "./seed0/"]).startswith(
        f"config error: seed0 and ./seed0/ are one folder ({tmp_path.resolve() / 'seed0'})"
    )
    (tmp_path / "link").symlink_to(tmp_path / "seed1")
    assert "seed1 and link are one folder" in line(capsys, ["seed0", "seed1", "link"])


@pytest.mark.parametrize(
    "content, says",
    [
        ("{}", "holds no metrics ({}): an unfinished or failed run?"),
        ('{"test/bi/rsum": 5', "is not JSON (Expecting"),
        ("\xff\xfe", "is not JSON"),
        ("[500.0]", "holds a list, not a mapping of metric names to numbers"),
        ('{"test/bi/rsum": "500"}', "'test/bi/rsum' is \"500\", not a number"),
        ('{"test/bi": {"rsum": 500}}', "'test/bi' is {\"rsum\": 500}, not a number"),
        ('{"test/bi/rsum": null}', "'test/bi/rsum' is null, not a number"),
        ('{"train/loss": 1.0}', "has no test metrics (test/<method>/<metric>): was the run tested?"),
    ],
)
def test_an_empty_or_damaged_metrics_file_is_refused_naming_it(tmp_path, capsys, content, says):
    good = write(tmp_path / "good", METRICS, ["seed=1"])
    bad = write(tmp_path / "bad", "")
    (tmp_path / "bad" / "metrics.json").write_bytes(content.encode("latin-1"))
    out = tmp_path / "agg.json"
    message = line(capsys, [good, bad, "--json", str(out)])
    assert message.startswith(f"metrics error: {tmp_path / 'bad' / 'metrics.json'}") and says in message
    assert not out.exists()


def test_a_run_without_metrics_is_named(tmp_path, capsys):
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(MetricsError, match="unfinished"):
        read_runs([str(tmp_path / "unfinished")])
    assert line(capsys, [str(tmp_path / "nowhere")]) == (
        f"metrics error: no metrics.json in {tmp_path / 'nowhere'} (no such folder)"
    )


def test_a_run_without_a_readable_config_is_refused(tmp_path, capsys):
    a, b = seeds(tmp_path)
    (tmp_path / "seed1" / "config.yaml").unlink()
    assert line(capsys, [a, b]) == (
        f"config error: no config.yaml in {b}: cannot tell whether its metrics measure the same config"
    )
    (tmp_path / "seed1" / "config.yaml").write_text("trainer: [max_steps: 4\n")
    assert line(capsys, [a, b]).startswith(f"config error: cannot read {b}/config.yaml: ")


def test_a_method_only_some_runs_have_is_shown_with_its_count(tmp_path, capsys):
    a = write(
        tmp_path / "a",
        METRICS | {"test/rerank@5/rsum": 490.0, "test/rerank@5/t2i_r1": 58.0},
        ["seed=0", "eval.rerank_ks=[5,20]"],
    )
    b = write(tmp_path / "b", METRICS | {"test/bi/i2t_r1": 70.0}, ["seed=1", "eval.rerank_ks=[20]"])
    out = tmp_path / "agg.json"
    main([a, b, "--json", str(out), "--allow-different", "eval.rerank_ks"])
    printed = capsys.readouterr().out
    assert "| rerank@5 (1 of 2 runs) | — | 58.0 ± 0.0 | 490.0 ± 0.0 | — | — |" in printed
    assert "| bi | 70.0 ± 0.0 (1 of 2 runs) | 60.0 ± 0.0 | 500.0 ± 0.0 | — | — |" in printed
    assert f"not in every run (mean over the runs that have it): rerank@5: 1 of 2 runs ({a})" in printed
    assert "metrics not in every run: test/bi/i2t_r1: 1 of 2 runs" in printed
    saved = json.loads(out.read_text())
    assert saved["methods_in_some_runs"] == {"rerank@5": {"runs": [a], "of": 2}}
    assert saved["in_some_runs"]["test/rerank@5/rsum"] == {
        "mean": 490.0,
        "std": 0.0,
        "values": [490.0],
        "runs": [a],
        "of": 2,
    }
    assert "test/rerank@5/rsum" not in saved["metrics"]  # "metrics": what every run has, as before
