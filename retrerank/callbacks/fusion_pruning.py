"""After testing a fusion run: which adapter sets the fusion uses, and the fusion pruned to them.

Each set's mean fusion weight per block is recorded while the validation split is evaluated
(fusion_activations.csv); with `keep` > 0 the fusion is pruned to the `keep` most-activated sets
(AdapterDrop, section 5) and the test split evaluated again, rows `pruned<keep>:<method>` in
`test_metrics` (the run adds them to its table). Retrieval and metrics come from the one pipeline.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl

from retrerank.adapters.fusion import prune_fusion, record_fusion
from retrerank.adapters.switch import Fuse
from retrerank.config import EvalConfig, FusionConfig
from retrerank.distributed import local
from retrerank.io import atomic_file, write_json_atomic
from retrerank.retrieval.pipeline import RetrieveRerank


class FusionPruning(pl.Callback):
    def __init__(
        self,
        cfg: FusionConfig,
        eval_cfg: EvalConfig,
        val_methods: list[str],
        test_methods: list[str],
        run_dir: str | Path,
    ):
        self.cfg, self.eval_cfg = cfg, eval_cfg
        self.val_methods, self.test_methods = val_methods, test_methods
        self.run_dir = Path(run_dir)
        self.kept: tuple[str, ...] = ()
        self.test_metrics: dict[str, float] = {}  # extra rows for the run's results table

    def on_test_end(self, trainer: pl.Trainer, system: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        with local():  # rank 0 alone, without collectives
            self._run(trainer, system)

    def _run(self, trainer: pl.Trainer, system: pl.LightningModule) -> None:
        fuse = system.bi_encoder.adapter_set
        if not isinstance(fuse, Fuse):
            raise ValueError("FusionPruning needs a fusion run (adapters.fusion.sets)")
        datamodule, progress = trainer.datamodule, trainer.progress_bar_callback is not None
        pipeline = RetrieveRerank.from_config(system, self.eval_cfg, progress)
        with record_fusion(system.backbone, fuse.name) as recorded:
            pipeline.evaluate(datamodule.val_split, self.val_methods, self.eval_cfg.ks, stage="val")
        activations = recorded.activations()
        self._write(recorded.layer_index, fuse.sets, activations.tolist())
        if not self.cfg.keep:
            return
        pruned = prune_fusion(fuse, activations, self.cfg.keep)
        self.kept = pruned.sets
        try:
            system.bi_encoder.adapter_set = system.cross_encoder.adapter_set = pruned
            metrics = pipeline.evaluate(datamodule.test_split, self.test_methods, self.eval_cfg.ks, stage="test")
        finally:
            system.bi_encoder.adapter_set = system.cross_encoder.adapter_set = fuse
        prefix = f"pruned{self.cfg.keep}:"
        self.test_metrics = {key.replace("test/", f"test/{prefix}", 1): value for key, value in metrics.items()}
        write_json_atomic(
            self.run_dir / "fusion.json",
            {
                "sets": list(fuse.sets),
                "kept": list(pruned.sets),
                "test": self.test_metrics,
                "mean_activation": dict(zip(fuse.sets, activations.mean(0).tolist())),  # full precision
            },
        )
        for logger in trainer.loggers:
            logger.log_metrics(self.test_metrics, step=trainer.global_step)

    def _write(self, layers: list[int], sets: tuple[str, ...], rows: list[list[float]]) -> None:
        with atomic_file(self.run_dir / "fusion_activations.csv", text=True) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["layer", *sets])
            writer.writerows([[layer, *(f"{w:.6f}" for w in row)] for layer, row in zip(layers, rows)])
