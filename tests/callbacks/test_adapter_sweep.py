import csv

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger
from PIL import Image

from retrerank.adapters.inject import adapter_sets
from retrerank.build import build_datamodule, build_system
from retrerank.callbacks.adapter_sweep import AdapterDropSweep
from retrerank.config import ConfigError, load
from retrerank.retrieval.pipeline import RetrieveRerank

SMALL = [
    "model.join_layer=1",
    "data.synthetic.n_train=48",
    "data.synthetic.n_val=12",
    "data.synthetic.n_test=12",
    "data.batch_size=8",
    "eval.rerank_ks=[5]",
    "eval.val_methods=[rerank@5]",
    "eval.monitor=val/rerank@5/rsum",
    "eval.cross_all=false",
    "adapters.enabled=true",
    "adapters.reduction_factor=4",
    "adapters.eval_drop=1",  # the test runs at n=1: the sweep must hand n=1 back
    "sweep.enabled=true",
    "sweep.methods=[bi,rerank@5]",
    "sweep.parallel_sets=[2]",
    "sweep.warmup=0",
    "sweep.repeats=1",
    "sweep.batch_size=8",
    "sweep.rerank_queries=4",
]
COLUMNS = [
    "n",
    "train_step_ms",
    "train_speedup",
    "encode_images_per_s",
    "encode_images_speedup",
    "encode_texts_per_s",
    "encode_texts_speedup",
    "rerank_ms_per_query",
    "rerank_speedup",
    "parallel2_ms",
    "parallel2_speedup",
    "bi_rsum",
    "rerank@5_rsum",
]


def config(tiny_bert_dir, tmp_path, *extra):
    return load(None, [f"model.backbone={tiny_bert_dir}", f"data.root={tmp_path / 'data'}"] + SMALL + list(extra))


class WandbLogger(Logger):
    """Stands in for Lightning's WandbLogger (the callback goes by the class name): records calls."""

    name, version = "fake", "0"

    def __init__(self):
        super().__init__()
        self.calls = []

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", metrics))

    def log_table(self, key, columns, data):
        self.calls.append(("table", key, columns, data))

    def log_image(self, key, images):
        self.calls.append(("image", key, images))


def test_sweep_after_testing_writes_table_plot_and_logs_and_leaves_the_model_as_it_was(tiny_bert_dir, tmp_path):
    cfg = config(tiny_bert_dir, tmp_path)
    torch.manual_seed(0)
    system = build_system(cfg)
    datamodule = build_datamodule(cfg, system)
    before = {k: v.clone() for k, v in system.state_dict().items()}
    sweep = AdapterDropSweep(cfg.sweep, cfg.eval, tmp_path / "run")
    wandb, csv_logger = WandbLogger(), CSVLogger(str(tmp_path), name="logs", version="")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=[csv_logger, wandb],
        callbacks=[sweep],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.test(system, datamodule=datamodule, verbose=False)

    layers = system.backbone.num_layers
    with open(tmp_path / "run" / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == COLUMNS and [int(r["n"]) for r in table] == list(range(layers + 1))
    assert [r["n"] for r in sweep.rows] == list(range(layers + 1))
    assert all(float(r[c]) > 0 for r in table for c in COLUMNS if c != "n" and not c.endswith("_rsum"))
    assert all(sweep.rows[0][c] == 1.0 for c in COLUMNS if c.endswith("_speedup"))
    with Image.open(tmp_path / "run" / "sweep.png") as png:
        assert png.format == "PNG" and png.size[0] > 100

    # the model is as before: drop handed back, no extra adapter sets, same weights, no gradients
    assert system.backbone.adapter_switch.drop == 1
    assert adapter_sets(system.backbone) == ["shared"]
    after = system.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p.grad is None for p in system.parameters())

    # recall at n=0 is the one pipeline's evaluation at drop 0, computed here separately
    system.backbone.adapter_switch.drop = 0
    again = RetrieveRerank.from_config(system, cfg.eval, progress=False).evaluate(
        datamodule.test_split, ["bi", "rerank@5"], cfg.eval.ks
    )
    assert sweep.rows[0]["bi_rsum"] == again["test/bi/rsum"]
    assert sweep.rows[0]["rerank@5_rsum"] == again["test/rerank@5/rsum"]

    kinds = {call[0]: call for call in wandb.calls}
    assert kinds["table"][1:3] == ("sweep/table", COLUMNS) and len(kinds["table"][3]) == layers + 1
    assert kinds["image"][1:] == ("sweep/plot", [str(tmp_path / "run" / "sweep.png")])
    assert kinds["metrics"][1][f"sweep/n{layers}/rerank@5_rsum"] == sweep.rows[-1]["rerank@5_rsum"]
    assert f"sweep/n{layers}/train_speedup" in (tmp_path / "logs" / "metrics.csv").read_text()


def test_sweep_without_adapters_is_a_clear_error(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep.enabled.*adapters.enabled=true"):
        config(tiny_bert_dir, tmp_path, "adapters.enabled=false")
    cfg = config(tiny_bert_dir, tmp_path, "sweep.enabled=false", "adapters.enabled=false")
    sweep = AdapterDropSweep(cfg.sweep, cfg.eval, tmp_path)
    with pytest.raises(ValueError, match="needs adapters.enabled=true"):
        sweep.setup(None, build_system(cfg), "fit")


def test_sweep_layers_outside_the_model_are_a_clear_error(tiny_bert_dir, tmp_path):
    cfg = config(tiny_bert_dir, tmp_path, "sweep.layers=[1,3]")
    with pytest.raises(ValueError, match=r"sweep.layers has \[3\] outside 0..2"):
        AdapterDropSweep(cfg.sweep, cfg.eval, tmp_path).setup(None, build_system(cfg), "fit")
    cfg = config(tiny_bert_dir, tmp_path, "sweep.layers=[2]")
    assert AdapterDropSweep(cfg.sweep, cfg.eval, tmp_path).check(build_system(cfg)) == [0, 2]  # n=0: the baseline
