"""The default job end to end on a tiny local model: run folder, metrics, checkpoint, search API."""

import json

import numpy as np
import pytest
import yaml

from experiments.run import main
from retrerank.build import load_system
from retrerank.config import ConfigError
from retrerank.retrieval.metrics import recall_at_k
from retrerank.search import Searcher

SMALL = [
    "model.join_layer=1",
    "data.synthetic.n_train=48",
    "data.synthetic.n_val=12",
    "data.synthetic.n_test=12",
    "data.batch_size=8",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "eval.rerank_ks=[3,5]",
    "eval.val_methods=[rerank@5]",
    "eval.monitor=val/rerank@5/rsum",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def run(tiny_bert_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    args = [f"output_dir={root}", "name=tiny", f"data.root={root / 'data'}", f"model.backbone={tiny_bert_dir}"] + SMALL
    return main(args)


def test_run_writes_one_folder_with_config_metrics_checkpoint_and_logs(run, capsys):
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()  # the resume point (trainer.resume=last)
    assert (run / "logs" / "metrics.csv").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["eval"]["rerank_ks"] == [3, 5] and config["data"]["batch_size"] == 8
    metrics = json.loads((run / "metrics.json").read_text())
    for method in ("bi", "rerank@3", "rerank@5", "cross_all"):
        for name in (
            "i2t_r1",
            "i2t_r5",
            "i2t_r10",
            "t2i_r1",
            "t2i_r5",
            "t2i_r10",
            "rsum",
            "i2t_ms_per_query",
            "t2i_ms_per_query",
        ):
            assert f"test/{method}/{name}" in metrics
        expected = sum(metrics[f"test/{method}/{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
        assert metrics[f"test/{method}/rsum"] == pytest.approx(expected)
    assert "val/rerank@5/rsum" in metrics and "train/loss" in metrics
    assert metrics["run/fit_seconds"] > 0 and "run/peak_gpu_mb" not in metrics  # GPU runs only
    # what made it, what it gave, how it went
    assert (run / "command.txt").read_text().startswith("python -m experiments.run output_dir=")
    results = (run / "results.md").read_text()
    assert results.startswith("| method | i2t R@1 | R@5 | R@10 |") and f"| {metrics['test/bi/rsum']:.1f} |" in results
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "examples.png").read_bytes()[:4] == b"\x89PNG"  # captions, bi top 5 | reranked top 5


def test_search_api_uses_the_checkpoint_and_agrees_with_the_metrics(run, tiny_bert_dir):
    metrics = json.loads((run / "metrics.json").read_text())
    system, cfg = load_system(run / "checkpoints" / "best.ckpt")
    from retrerank.data.synthetic import load_synthetic

    split = load_synthetic(cfg.data.synthetic, cfg.data.root)["test"].filter_languages(["en"])
    searcher = Searcher(system, cfg.eval)
    searcher.index_images(split.images)
    hits = searcher.search_text(split.texts, k=10, rerank_top=5)
    assert len(hits) == len(split.texts) and all(len(h) == 10 for h in hits)
    assert all(h[0].score >= h[1].score for h in hits)
    position = {im.image_id: i for i, im in enumerate(split.images)}
    rankings = np.array([[position[h.id] for h in row] for row in hits])
    recall = recall_at_k(rankings, split.caption_relevant, (1, 5, 10))  # exact relevance, as evaluation uses
    for k in (1, 5, 10):
        assert recall[f"r{k}"] == pytest.approx(metrics[f"test/rerank@5/t2i_r{k}"])

    searcher.index_captions(split.texts, [c.caption_id for c in split.captions])
    by_image = searcher.search_image(split.images[:2], k=3, rerank_top=None)
    assert len(by_image) == 2 and all(h.id.startswith("syn-") for h in by_image[0])


def test_wandb_logger_runs_offline_and_keeps_config_metrics_and_table(tiny_bert_dir, tmp_path, monkeypatch):
    import experiments.run as entry
    from retrerank import loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    seen = {}

    def inspect_then_finish(logger):  # the W&B run as it stands when the job closes it
        seen["config"] = dict(logger.experiment.config)
        seen["summary"] = dict(logger.experiment.summary)
        seen["mode"] = logger.experiment.settings.mode
        seen["group"] = logger.experiment.group
        loggers.finish(logger)

    monkeypatch.setattr(entry, "finish", inspect_then_finish)
    monkeypatch.setenv("WANDB_RUN_GROUP", "slurm-1234")  # as the SLURM recipe sets it
    args = [
        f"output_dir={tmp_path}",
        "name=wb",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        "logger=wandb",
        "wandb.mode=auto",
    ] + SMALL
    run = main(args)
    assert seen["mode"] == "offline" and seen["group"] == "slurm-1234"
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1, "one offline W&B run per job"
    assert seen["config"]["eval"]["rerank_ks"] == [3, 5]
    metrics = json.loads((run / "metrics.json").read_text())
    assert seen["summary"]["test/rerank@5/rsum"] == pytest.approx(metrics["test/rerank@5/rsum"])
    tables = list((run / "wandb").rglob("media/table/**/*.table.json"))
    table = json.loads(tables[0].read_text())
    assert [row[0] for row in table["data"]] == ["bi", "rerank@3", "rerank@5", "cross_all"]


def test_tensorboard_logger_writes_events_into_the_run_folder(tiny_bert_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = (
        [
            f"output_dir={tmp_path}",
            "name=tb",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "logger=tensorboard",
        ]
        + SMALL
        + ["trainer.max_steps=3", "trainer.val_check_interval=3"]
    )
    run = main(args)
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "Lightning's TensorBoardLogger writes <run>/tensorboard/events.out.tfevents.*"
    scalars = set()
    for path in events:
        scalars |= set(EventAccumulator(str(path)).Reload().Tags()["scalars"])
    assert {"train/loss", "val/rerank@5/rsum"} <= scalars
    assert (run / "metrics.json").is_file() and not (run / "logs" / "metrics.csv").exists()


def test_a_run_is_evaluated_again_with_other_eval_settings_through_the_same_pipeline(run, capsys):
    from experiments.evaluate import main as evaluate
    from retrerank.config import ConfigError

    metrics = json.loads((run / "metrics.json").read_text())
    data = f"data.root={run.parent / 'data'}"  # the run's data (never read from where its checkpoint says)
    # other batch sizes rank exactly as the run's own ones: its test numbers again
    again = evaluate([str(run), "eval.rerank_batch_size=7", "eval.batch_size=5", data])
    for key in ("test/rerank@5/t2i_r1", "test/rerank@3/i2t_r1", "test/bi/rsum", "test/cross_all/t2i_map_at_r"):
        assert again[key] == pytest.approx(metrics[key])
    saved = run / "evaluations" / "eval.rerank_batch_size=7_eval.batch_size=5.json"
    assert json.loads(saved.read_text())["metrics"] == again
    evaluate([str(run), "eval.rerank_batch_size=7", "eval.batch_size=5", data])  # a second one is kept beside it
    assert (run / "evaluations" / "eval.rerank_batch_size=7_eval.batch_size=5-2.json").is_file()
    with pytest.raises(ConfigError, match="only eval"):
        evaluate([str(run), "trainer.max_steps=3"])
    with pytest.raises(ConfigError, match="no best checkpoint"):
        evaluate([str(run / "nowhere")])
    # deeper than the 12-image test split: refused, not capped under the name rerank@100
    with pytest.raises(ConfigError, match=r"'eval\.rerank_ks': rerank@100 .* 'test' split has only 12 images"):
        evaluate([str(run), "eval.rerank_ks=[100]", data])


class _Touch:
    """Pickles as a call of Path.touch: unpickling it without weights_only would create the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_the_code_never_runs(run, tmp_path):
    import torch

    marker = tmp_path / "ran"
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    state["hyper_parameters"]["payload"] = _Touch(marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    with pytest.raises(ValueError, match=r"refusing to load .*crafted\.ckpt.*never unpickles code"):
        load_system(crafted)
    assert not marker.exists()  # the callable was not run
    system, _ = load_system(run / "checkpoints" / "best.ckpt")  # the project's own checkpoints still load
    assert not system.training


def test_runs_never_share_or_overwrite_a_folder(tmp_path, capsys):
    """Two unnamed runs in the same second get two folders; a new run refuses an existing
    name (its files untouched); a resume with nothing to resume says so."""
    from retrerank.config import ConfigError, load
    from retrerank.run_dir import claim_run_dir

    cfg = load(None, [f"output_dir={tmp_path}"])
    first, second = claim_run_dir(cfg), claim_run_dir(cfg)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith(first.name)  # the same second: a -2 suffix, not a shared folder
    named = load(None, [f"output_dir={tmp_path}", "name=mine"])
    folder = claim_run_dir(named)
    (folder / "config.yaml").write_text("theirs")
    with pytest.raises(ConfigError, match=r"'name'.*mine already exists.*trainer.resume=last"):
        claim_run_dir(named)
    assert (folder / "config.yaml").read_text() == "theirs"
    assert claim_run_dir(load(None, [f"output_dir={tmp_path}", "name=mine", "trainer.resume=last"])) == folder


def test_a_rerun_of_an_existing_name_stops_before_writing(run, tiny_bert_dir):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    args = [
        f"output_dir={run.parent}",
        f"name={run.name}",
        f"data.root={run.parent / 'data'}",
        f"model.backbone={tiny_bert_dir}",
    ] + SMALL
    with pytest.raises(ConfigError, match="already exists"):
        main(args)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
