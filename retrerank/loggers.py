"""Loggers: Lightning's CSV logger continued across resumes, and W&B (offline when no API key is set)."""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from retrerank.config import Config
from retrerank.io import write_text_atomic
from retrerank.report import columns, table_rows


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSV logger, except that a resumed run goes on in the same metrics.csv: the rows
    the interrupted run logged before `keep_before` (its checkpoint's step) are kept, later ones
    dropped, because the resumed run logs those steps again. (Lightning deletes the file.)"""

    def __init__(self, *args, keep_before: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keep_before = keep_before

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None and self.keep_before is not None:
            kept = earlier_rows(Path(self.log_dir) / "metrics.csv", self.keep_before)
            experiment = super().experiment  # removes the old file
            experiment.metrics[:0] = kept  # written back with the first save
            return experiment
        return super().experiment


def earlier_rows(path: Path, before: int) -> list[dict[str, float]]:
    """The rows of a CSV log with step < before, as the logger holds them (empty cells left out)."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = [
            {key: float(cell) for key, cell in row.items() if cell not in ("", None)} for row in csv.DictReader(file)
        ]
    out = []
    for row in rows:
        if "step" in row and row["step"] < before:
            row["step"] = int(row["step"])
            out.append(row)
    return out


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def wandb_run_id(cfg: Config, run_dir: Path) -> str:
    """The W&B run id of this run folder. A resumed run (trainer.resume, e.g. a requeued SLURM job)
    continues the W&B run its folder started, so a preempted job stays one run on the dashboard;
    any other run starts a new one. Lightning plots against trainer/global_step, so the resumed
    curves join the earlier ones at the checkpoint's step."""
    path = run_dir / "wandb_run_id"
    if cfg.trainer.resume and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:  # rank 0 owns the run folder
        write_text_atomic(path, run_id)
    return run_id


def make_wandb_logger(cfg: Config, run_dir: Path):
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ValueError("logger=wandb needs wandb: pip install 'retrerank[wandb]'") from err
    # one W&B run per job: Lightning creates it on rank 0 only; a group ties a job's runs together
    group = cfg.wandb.group or os.environ.get("WANDB_RUN_GROUP") or None
    logger = WandbLogger(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        name=run_dir.name,
        save_dir=str(run_dir),
        mode=wandb_mode(cfg.wandb.mode),
        group=group,
        id=wandb_run_id(cfg, run_dir),
    )
    logger.log_hyperparams(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return logger


def log_results_table(logger, metrics: dict[str, float], stage: str = "test") -> None:
    """The printed results table, as a W&B table (other loggers already have the scalars)."""
    if logger.__class__.__name__ == "WandbLogger":
        logger.log_table(key=f"{stage}/results", columns=columns(metrics, stage), data=table_rows(metrics, stage))


def finish(logger) -> None:
    """Close the W&B run so that an offline run's files are complete on disk."""
    if logger.__class__.__name__ == "WandbLogger":
        logger.experiment.finish()
