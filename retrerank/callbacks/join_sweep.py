"""Join-layer sweep of a late-interaction model: what caching the lower m blocks buys and costs.

After testing, for each join layer m in 0..L (runtime state, `cross.joining_at(m)`): the test
corpus is indexed with its layer-m states, then rerank latency per query (the reranking step of
a search, medians; the pipeline's `rerank_ms_per_query`) and recall of the sweep's methods.
Speed-ups are against m=0. Retrieval, metrics and timing are the pipeline's and
retrerank.timing's. Writes join_sweep.csv and join_sweep.png to the run folder and logs the table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
from tqdm.auto import tqdm

from retrerank.callbacks.evaluation import check_split_sizes
from retrerank.config import EvalConfig, SweepConfig
from retrerank.distributed import local
from retrerank.io import atomic_file
from retrerank.plots import plot_sweep
from retrerank.retrieval.methods import first_rerank_depth
from retrerank.retrieval.pipeline import RetrieveRerank


class JoinLayerSweep(pl.Callback):
    def __init__(self, cfg: SweepConfig, eval_cfg: EvalConfig, run_dir: str | Path):
        self.cfg, self.eval_cfg, self.run_dir = cfg, eval_cfg, Path(run_dir)
        self.rows: list[dict[str, float]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str | None = None) -> None:
        if not getattr(pl_module.cross_encoder, "late", False):
            raise ValueError("the join-layer sweep (sweep.join=true) needs model.join_layer > 0")
        if first_rerank_depth(self.cfg.methods) is None:
            raise ValueError("the join-layer sweep times reranking: put a rerank@k in sweep.methods")
        if getattr(trainer.datamodule, "test_split", None) is not None:  # fail before training
            check_split_sizes(trainer.datamodule.test_split, (), self.cfg.methods, "sweep.methods")

    def on_test_end(self, trainer: pl.Trainer, system: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # rank 0 alone, without collectives
            with local():
                self.run(trainer, system)

    def run(self, trainer: pl.Trainer, system) -> list[dict[str, float]]:
        cross, split, cfg = system.cross_encoder, trainer.datamodule.test_split, self.cfg
        rerank_top = first_rerank_depth(cfg.methods)
        queries, k = split.texts[: cfg.rerank_queries], min(max(self.eval_cfg.ks), len(split.images))
        self.rows = []
        progress = trainer.progress_bar_callback is not None
        for m in tqdm(range(system.backbone.num_layers + 1), desc="join-layer sweep", disable=not progress):
            with cross.joining_at(m):
                pipeline = RetrieveRerank.from_config(system, self.eval_cfg, progress=False)
                metrics = pipeline.evaluate(split, cfg.methods, self.eval_cfg.ks, stage="test")  # indexes at m
                rerank_ms = pipeline.rerank_ms_per_query(queries, k, rerank_top, cfg.warmup, cfg.repeats)
                row = {
                    "m": m,
                    "rerank_ms_per_query": rerank_ms,
                    "cache_bytes_per_image": pipeline.image_states.bytes_per_item(),
                }
                row.update({f"{method}_rsum": metrics[f"test/{method}/rsum"] for method in cfg.methods})
            self.rows.append(row)
        for row in self.rows:
            row["rerank_speedup"] = self.rows[0]["rerank_ms_per_query"] / row["rerank_ms_per_query"]
        self._write_and_log(trainer)
        return self.rows

    def _write_and_log(self, trainer: pl.Trainer) -> None:
        columns = ["m", "rerank_ms_per_query", "rerank_speedup", "cache_bytes_per_image"] + [
            c for c in self.rows[0] if c.endswith("_rsum")
        ]
        with atomic_file(self.run_dir / "join_sweep.csv", text=True) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([[row[c] if c == "m" else f"{row[c]:.6g}" for c in columns] for row in self.rows])
        plot_sweep(
            self.rows,
            self.run_dir / "join_sweep.png",
            ["rerank_speedup"],
            [c for c in columns if c.endswith("_rsum")],
            x="m",
            xlabel="join layer m (text and image read alone below it)",
        )
        scalars = {f"join_sweep/m{row['m']}/{c}": float(row[c]) for row in self.rows for c in columns if c != "m"}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if logger.__class__.__name__ == "WandbLogger":
                logger.log_table(
                    key="join_sweep/table", columns=columns, data=[[row[c] for c in columns] for row in self.rows]
                )
                logger.log_image(key="join_sweep/plot", images=[str(self.run_dir / "join_sweep.png")])
