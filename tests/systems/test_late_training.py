"""Training and evaluating a late-interaction model (model.join_layer) through experiments.run."""

import json

import pytest

from experiments.run import main
from retrerank.build import build_system, load_system
from retrerank.config import ConfigError, load
from retrerank.data.synthetic import load_synthetic
from retrerank.retrieval.pipeline import RetrieveRerank
from tests.adapters.test_adapter_system import SMALL

LATE = [s for s in SMALL if not s.startswith("adapters.")]


def test_robust_join_draws_m_per_batch_and_evaluates_at_join_layer(tiny_bert_dir, tmp_path):
    cfg = load(
        None,
        [f"model.backbone={tiny_bert_dir}", f"data.root={tmp_path}"]
        + LATE
        + ["model.join_layer=2", "model.robust_join=true"],
    )
    system = build_system(cfg)
    drawn = set()
    for _ in range(60):
        system.on_train_batch_start({}, 0)
        drawn.add(system.cross_encoder.join_layer)
    assert drawn == {0, 1, 2}
    system.on_validation_start()
    assert system.cross_encoder.join_layer == 2


def test_late_model_trains_and_reevaluates_from_its_checkpoint(tiny_bert_dir, tmp_path):
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=late",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
        ]
        + LATE
    )
    metrics = json.loads((run / "metrics.json").read_text())
    system, cfg = load_system(run / "checkpoints" / "best.ckpt")
    assert system.cross_encoder.late and system.cross_encoder.join_layer == 1
    split = load_synthetic(cfg.data.synthetic, cfg.data.root)["test"].filter_languages(["en"])
    again = RetrieveRerank.from_config(system, cfg.eval, progress=False).evaluate(split, ["rerank@5"], cfg.eval.ks)
    assert again["test/rerank@5/rsum"] == pytest.approx(metrics["test/rerank@5/rsum"])


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.join_layer=-1"], "model.join_layer"),
        (["model.join_layer=0", "model.robust_join=true"], "model.robust_join"),
    ],
)
def test_bad_join_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(None, override)


def test_join_sweep_measures_every_m_and_agrees_with_the_test(tiny_bert_dir, tmp_path):
    import csv

    run = main(
        [
            f"output_dir={tmp_path}",
            "name=sweep",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            "model.robust_join=true",
            "sweep.join=true",
            "sweep.methods=[bi,rerank@5]",
            "sweep.repeats=1",
            "sweep.warmup=0",
        ]
        + LATE
    )
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "join_sweep.csv").open()))
    assert [int(r["m"]) for r in rows] == [0, 1, 2]
    assert float(rows[0]["rerank_speedup"]) == 1.0
    assert float(rows[1]["rerank@5_rsum"]) == pytest.approx(metrics["test/rerank@5/rsum"], abs=1e-3)
    assert all(float(r["bi_rsum"]) == pytest.approx(metrics["test/bi/rsum"], abs=1e-3) for r in rows)
    assert float(rows[2]["cache_bytes_per_image"]) > 0 and (run / "join_sweep.png").stat().st_size > 0
