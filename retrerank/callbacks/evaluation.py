"""Full retrieve-then-rerank evaluation on the validation and test splits.

It only wires the system's encoders and the datamodule's splits into the one
retrieval pipeline (retrerank.retrieval.pipeline); no retrieval or metric logic here.
"""
from __future__ import annotations

import lightning.pytorch as pl

from retrerank.config import EvalConfig
from retrerank.retrieval.pipeline import RetrieveRerank


def make_pipeline(system, cfg: EvalConfig, progress: bool = True, rerank: bool = True) -> RetrieveRerank:
    """The system's retrieval pipeline; rerank=False: bi-encoder search only (no cross-encoder, so a
    late-interaction model caches no layer states)."""
    return RetrieveRerank(
        system.bi_encoder, system.cross_encoder if rerank else None, batch_size=cfg.batch_size,
        rerank_batch_size=cfg.rerank_batch_size, chunk_size=cfg.chunk_size, scoring=cfg.scoring,
        bi_weight=bi_weight(system, cfg), progress=progress, index=cfg.index, ivf_nlist=cfg.ivf_nlist, ivf_nprobe=cfg.ivf_nprobe,
    )


def bi_weight(system, cfg: EvalConfig) -> float:
    """eval.bi_weight, or (None) the trained logit scale of the system's contrastive loss."""
    if cfg.bi_weight is not None:
        return cfg.bi_weight
    scale = getattr(getattr(system, "contrastive", None), "scale", None)
    return float(scale) if scale is not None else 1.0


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of several evaluations (folds) with the same keys."""
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


class RetrievalEvaluation(pl.Callback):
    def __init__(self, cfg: EvalConfig, val_methods: list[str], test_methods: list[str]):
        self.cfg = cfg
        self.val_methods = val_methods
        self.test_methods = test_methods
        self.results: dict[str, dict[str, float]] = {}  # stage -> last metrics

    def _run(self, trainer: pl.Trainer, system: pl.LightningModule, stage: str) -> None:
        split = getattr(trainer.datamodule, f"{stage}_split")
        # protocols such as COCO 1k evaluate several folds and report their mean
        folds = (getattr(trainer.datamodule, "test_folds", None) if stage == "test" else None) or [split]
        methods = self.val_methods if stage == "val" else self.test_methods
        progress = trainer.progress_bar_callback is not None
        pipeline = make_pipeline(system, self.cfg, progress)
        metrics = mean_metrics([pipeline.evaluate(fold, methods, self.cfg.ks, stage=stage) for fold in folds])
        self.results[stage] = metrics
        system.log_dict(metrics, sync_dist=False)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")
