"""experiments.grid and retrerank.reevaluate: the comparison grid's runs, its re-evaluations and its table."""

import json
import shutil

import pytest

from experiments import grid
from retrerank.config import ConfigError, load, to_yaml
from retrerank.reevaluate import evaluate_run

TINY = [
    "model.join_layer=1",
    "data.synthetic.n_train=48",
    "data.synthetic.n_val=20",
    "data.synthetic.n_test=20",
    "data.batch_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "eval.rerank_ks=[5,20]",
]


@pytest.fixture(scope="module")
def group(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    args = [f"output_dir={root}", f"data.root={root / 'data'}", f"model.backbone={tiny_bert_dir}", *TINY]
    return grid.main(
        [
            "--seeds",
            "0",
            "--name",
            "g",
            "--rows",
            "bi",
            "cross",
            "joint",
            "--columns",
            "monolingual",
            "zeroshot_novel",
            *args,
        ]
    ), args


def test_grid_trains_each_row_once_and_tables_every_column(group):
    folder, _ = group
    runs = sorted(p.name for p in (folder / "runs" / "en").iterdir())
    assert runs == ["bi_seed0", "cross_seed0", "joint_seed0"]
    joint = json.loads((folder / "runs" / "en" / "joint_seed0" / "metrics.json").read_text())
    table = json.loads((folder / "grid.json").read_text())["cells"]
    cell = table["monolingual"]["joint (sum): rerank@20"]["test/rsum"]
    assert cell["values"] == [joint["test/rerank@20/rsum"]] and cell["std"] == 0.0
    assert "two models, rerank@20" in table["monolingual"] and "two models, rerank@20" in table["zeroshot_novel"]
    novel = json.loads((folder / "evals" / "zeroshot_novel" / "joint_seed0.json").read_text())
    assert table["zeroshot_novel"]["joint (sum): bi-encoder"]["test/rsum"]["values"] == [novel["test/bi/rsum"]]
    assert novel["test/bi/rsum"] != joint["test/bi/rsum"]  # another test split
    text = (folder / "grid.md").read_text()
    assert "### monolingual (1 seeds)" in text and "| bi-encoder alone |" in text
    assert "### zeroshot_novel (1 seeds)" in text and "smallest k whose rerank@k rsum" in text


def test_two_models_retrieve_with_one_run_and_rerank_with_the_other(group):
    folder, _ = group
    runs = folder / "runs" / "en"
    bi, cross = (json.loads((runs / f"{r}_seed0" / "metrics.json").read_text()) for r in ("bi", "cross"))
    two = json.loads((folder / "evals" / "monolingual" / "two_models_seed0.json").read_text())
    assert two["test/bi/rsum"] == pytest.approx(bi["test/bi/rsum"])  # the bi run retrieves
    assert "test/rerank@20/rsum" in two and "test/cross_all/rsum" not in two  # no line shows its all pairs
    assert two["model/trainable_params"] == bi["model/trainable_params"] + cross["model/trainable_params"]
    # the evaluation the grid runs, with all pairs: the cross run scores every pair (by its logit alone)
    again = evaluate_run(
        runs / "bi_seed0",
        ["eval.scoring=cross", "eval.cross_all=true", *grid.data_root(runs / "bi_seed0")],
        rerank_with=runs / "cross_seed0",
        progress=False,
    )
    assert again["test/rerank@20/rsum"] == pytest.approx(two["test/rerank@20/rsum"])
    for key in ("rsum", "t2i_r1", "i2t_map_at_r"):
        assert again[f"test/cross_all/{key}"] == pytest.approx(cross[f"test/cross_all/{key}"])


def test_a_run_reranked_by_itself_is_its_own_test(group):
    folder, _ = group
    run = folder / "runs" / "en" / "joint_seed0"
    own = json.loads((run / "metrics.json").read_text())
    again = evaluate_run(run, grid.data_root(run), rerank_with=run, progress=False)
    for key in ("test/rerank@5/t2i_r1", "test/rerank@20/rsum", "test/cross_all/i2t_map_at_r"):
        assert again[key] == pytest.approx(own[key])


def test_only_test_side_keys_change_and_mismatched_models_are_refused(group, tmp_path):
    folder, args = group
    run = folder / "runs" / "en" / "joint_seed0"
    with pytest.raises(ConfigError, match=r"only eval\.key=value and test-split overrides"):
        evaluate_run(run, ["data.train_langs=[de]"])
    other = (
        grid.main(
            [
                "--seeds",
                "0",
                "--name",
                "wide",
                "--rows",
                "cross",
                "--columns",
                "monolingual",
                *args,
                "model.max_text_len=20",
            ]
        )
        / "runs"
        / "en"
        / "cross_seed0"
    )
    with pytest.raises(ConfigError, match=r"model\.max_text_len differs"):
        evaluate_run(run, rerank_with=other)


def test_an_existing_group_is_refused_and_continue_trains_nothing_again(group):
    folder, args = group
    base = [
        "--seeds",
        "0",
        "--name",
        "g",
        "--rows",
        "bi",
        "cross",
        "joint",
        "--columns",
        "monolingual",
        "zeroshot_novel",
        *args,
    ]
    with pytest.raises(ConfigError, match="exists"):
        grid.main(base)
    stamps = sorted(p.stat().st_mtime_ns for p in folder.rglob("*.json") if "grid.json" not in p.name)
    grid.main(base + ["--continue"])
    assert stamps == sorted(p.stat().st_mtime_ns for p in folder.rglob("*.json") if "grid.json" not in p.name)


def test_smallest_matching_k_is_the_first_depth_within_a_point_of_rerank20():
    def line(rsum):
        return {"test/rsum": {"mean": rsum}}

    lines = {
        "joint (sum): rerank@5": line(500.0),
        "joint (sum): rerank@10": line(539.2),
        "joint (sum): rerank@20": line(540.0),
        "joint (sum): rerank@50": line(541.0),
    }
    assert grid.smallest_matching_k(lines, "sum") == 10
    assert grid.smallest_matching_k(lines, "distill") is None


def test_the_grid_configs_load_for_every_row_and_setup(tmp_path):
    from retrerank.config import load

    for training in grid.TRAININGS:
        for row in grid.ROWS:
            cfg = load(None, grid.run_command(training, row, 1, [], tmp_path))
            assert cfg.eval.rerank_ks == [5, 10, 20, 50] and cfg.seed == 1 and cfg.data.synthetic.seed == 1
            assert cfg.eval.cross_all == (row in grid.ALL_PAIRS)  # all pairs only where a line shows them
    assert load(None, grid.run_command("multilingual", "distill", 0, [], tmp_path)).data.train_langs == [
        "en",
        "de",
        "fr",
        "cs",
    ]
    assert load(None, grid.run_command("en", "distill", 0, [], tmp_path)).objective.distill_weight == 1.0
    held = load(None, grid.run_command("en_de_fr", "joint", 0, [], tmp_path)).data  # cs is never trained on
    assert (held.setup, held.train_langs, held.test_langs) == ("zeroshot", ["en", "de", "fr"], ["cs"])


def test_adapter_rows_train_in_the_multilingual_setup_only():
    assert grid.trainings_of("adapters", "en") == [] and grid.trainings_of("fusion", "en") == []
    assert grid.trainings_of("fusion", "multilingual") == ["set_en", "set_de", "set_fr", "set_cs", "fusion"]
    assert grid.trainings_of("joint", "en") == ["joint"]


def test_the_fusion_row_fuses_one_adapter_set_per_language_and_tables_its_pruned_fusion(tiny_bert_dir, tmp_path):
    from retrerank.config import load

    # six runs: as short as a run gets, and only the one rerank depth the lines show
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "eval.rerank_ks=[20]", "eval.cross_all=false"]
    args = [
        f"output_dir={tmp_path}",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        *TINY,
        *short,
    ]
    folder = grid.main(
        [
            "--seeds",
            "0",
            "--name",
            "m",
            "--rows",
            "adapters",
            "fusion",
            "--columns",
            "multilingual",
            "multilingual_de_fr_cs",
            *args,
        ]
    )
    runs = folder / "runs" / "multilingual"
    assert sorted(p.name for p in runs.iterdir()) == [
        "adapters_seed0",
        "fusion_seed0",
        "set_cs_seed0",
        "set_de_seed0",
        "set_en_seed0",
        "set_fr_seed0",
    ]
    german = load(None, grid.run_command("multilingual", "set_de", 0, args, folder))
    assert german.data.train_langs == ["de"] and german.data.test_langs == ["de"] and german.adapters.enabled
    fusion = load(None, grid.run_command("multilingual", "fusion", 0, args, folder))
    assert fusion.adapters.fusion.sets == {lang: str(runs / f"set_{lang}_seed0") for lang in grid.FUSED}
    assert fusion.data.train_langs == ["en", "de", "fr", "cs"]
    metrics = json.loads((runs / "fusion_seed0" / "metrics.json").read_text())
    sets = [json.loads((runs / f"set_{lang}_seed0" / "metrics.json").read_text()) for lang in grid.FUSED]
    cells = json.loads((folder / "grid.json").read_text())["cells"]
    assert list(cells) == ["multilingual"]  # the adapter rows are not tested again on other splits
    lines = cells["multilingual"]
    pruned = lines["AdapterFusion pruned to 2 sets: rerank@20"]
    assert pruned["test/rsum"]["values"] == [metrics["test/pruned2:rerank@20/rsum"]]
    assert pruned["test/params"]["values"] == [
        metrics["model/trainable_params"] + sum(m["model/trainable_params"] for m in sets)
    ]
    whole = lines["AdapterFusion of 4 language sets: bi-encoder"]["test/rsum"]["values"]
    assert whole == [metrics["test/bi/rsum"]]
    one = lines["adapters, one set for all languages: bi-encoder"]
    adapters = json.loads((runs / "adapters_seed0" / "metrics.json").read_text())
    assert one["test/params"]["values"] == [adapters["model/trainable_params"]]
    assert "| AdapterFusion pruned to 2 sets: bi-encoder |" in (folder / "grid.md").read_text()


def test_the_wide_table_puts_every_column_side_by_side_with_mean_and_spread():
    def entry(rsums, t2i, i2t, params=25e6):
        from experiments.aggregate import aggregate

        return aggregate(
            [
                {
                    "test/rsum": r,
                    "test/t2i_r1": t2i,
                    "test/i2t_r1": i2t,
                    "test/t2i_ms_per_query": 3.0,
                    "test/i2t_ms_per_query": 1.0,
                    "test/params": params,
                }
                for r in rsums
            ]
        )

    table = {
        "monolingual": {"bi-encoder alone": entry([550.0, 554.0], 70.0, 86.0)},
        "zeroshot_novel": {
            "bi-encoder alone": entry([520.0], 50.0, 70.0),
            "joint (sum): bi-encoder": entry([530.0], 55.0, 72.0),
        },
    }
    text = grid.format_wide(table)
    assert "| model | monolingual (2 seeds) | zeroshot_novel (1 seeds) | ms/query t2i / i2t | params |" in text
    assert "| bi-encoder alone | 552.0 ± 2.8; 70.0 / 86.0 | 520.0 ± 0.0; 50.0 / 70.0 | 3 / 1 | 25.0 M |" in text
    assert "| joint (sum): bi-encoder | — | 530.0 ± 0.0; 55.0 / 72.0 |" in text


def test_a_grid_stopped_mid_seed_keeps_the_evaluations_of_the_rows_trained_before(group, tmp_path, monkeypatch):
    import shutil

    import experiments.run

    folder, args = group
    copy = tmp_path / "g"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "evals")
    shutil.rmtree(copy / "runs" / "en" / "joint_seed0")

    def stop(argv):
        raise RuntimeError("stopped")

    monkeypatch.setattr(experiments.run, "main", stop)
    args = [a if not a.startswith("output_dir=") else f"output_dir={tmp_path}" for a in args]
    with pytest.raises(RuntimeError, match="stopped"):
        grid.main(
            [
                "--seeds",
                "0",
                "--name",
                "g",
                "--continue",
                "--rows",
                "bi",
                "cross",
                "joint",
                "--columns",
                "monolingual",
                "zeroshot_novel",
                *args,
            ]
        )
    assert sorted(p.name for p in (copy / "evals" / "zeroshot_novel").iterdir()) == [
        "bi_seed0.json",
        "cross_seed0.json",
        "two_models_seed0.json",
    ]
    assert (copy / "evals" / "monolingual" / "two_models_seed0.json").is_file()
    assert "| bi-encoder alone |" in (copy / "grid.md").read_text()


def finished_row(group, row, seed, overrides=()):
    """One row's run as experiments.run leaves it (its resolved config and metrics), without training."""
    folder = grid.run_dir(group, "en", row, seed)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(load(None, grid.run_command("en", row, seed, list(overrides), group))))
    metrics = {f"test/bi/{key}": 500.0 + seed for key in ("rsum", "t2i_r1", "i2t_r1", "t2i_ms_per_query")}
    metrics |= {"test/bi/i2t_ms_per_query": 1.0, "model/trainable_params": 1e6}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_the_tables_refuse_runs_of_another_config_than_their_row_and_seeds_vary(tmp_path):
    group = tmp_path / "g"
    for seed in (0, 1):
        finished_row(group, "bi", seed)
        finished_row(group, "joint", seed)
    grid.write_tables(group, ["monolingual"], [0, 1], [])  # the rows differ in their recipes' keys: on purpose
    lines = json.loads((group / "grid.json").read_text())["cells"]["monolingual"]
    assert lines["bi-encoder alone"]["test/rsum"]["values"] == [500.0, 501.0]
    assert "joint (sum): bi-encoder" in lines
    (group / "grid.json").unlink()
    (group / "grid.md").unlink()
    # one seed of a row continued with another budget: that row's mean would mix two budgets
    shutil.rmtree(grid.run_dir(group, "en", "bi", 1))
    finished_row(group, "bi", 1, ["trainer.max_steps=300"])
    bi = [grid.run_dir(group, "en", "bi", s) for s in (0, 1)]
    with pytest.raises(ConfigError) as refused:
        grid.write_tables(group, ["monolingual"], [0, 1], [])
    assert str(refused.value).startswith(
        f"the runs' configs differ, so their mean would mix experiments: trainer.max_steps (100 in {bi[0]}; "
        f"300 in {bi[1]})"
    )
    # a whole row at another budget: its seeds agree, but the rows compared in one table do not
    shutil.rmtree(grid.run_dir(group, "en", "bi", 0))
    finished_row(group, "bi", 0, ["trainer.max_steps=300"])
    with pytest.raises(ConfigError, match=r"trainer\.max_steps \(300 in .*bi_seed0, .*bi_seed1; 100 in .*joint_seed0"):
        grid.write_tables(group, ["monolingual"], [0, 1], [])
    assert not (group / "grid.json").exists() and not (group / "grid.md").exists()
