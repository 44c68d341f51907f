"""W&B logging: Lightning's WandbLogger, offline when no API key is set."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from retrerank.config import Config
from retrerank.report import COLUMNS, table_rows


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def make_wandb_logger(cfg: Config, run_dir: Path):
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ValueError("logger=wandb needs wandb: pip install 'retrerank[wandb]'") from err
    # one W&B run per job: Lightning creates it on rank 0 only; a group ties a job's runs together
    group = cfg.wandb.group or os.environ.get("WANDB_RUN_GROUP") or None
    logger = WandbLogger(project=cfg.wandb.project, entity=cfg.wandb.entity, name=run_dir.name,
                         save_dir=str(run_dir), mode=wandb_mode(cfg.wandb.mode), group=group)
    logger.log_hyperparams(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return logger


def log_results_table(logger, metrics: dict[str, float], stage: str = "test") -> None:
    """The printed results table, as a W&B table (other loggers already have the scalars)."""
    if logger.__class__.__name__ == "WandbLogger":
        logger.log_table(key=f"{stage}/results", columns=COLUMNS, data=table_rows(metrics, stage))


def finish(logger) -> None:
    """Close the W&B run so that an offline run's files are complete on disk."""
    if logger.__class__.__name__ == "WandbLogger":
        logger.experiment.finish()
