"""Run folders: a new run claims a folder of its own; only a resume goes back into one.

Claiming is an atomic mkdir, so two runs started in the same second (or given the same name)
can never share a folder, mix checkpoints or overwrite each other's config and curves.
"""
from __future__ import annotations

import time
from pathlib import Path

from retrerank.config import Config, ConfigError


def claim_run_dir(cfg: Config, main_rank: bool = True) -> Path:
    """The run's folder: `output_dir/name`, or a timestamp (with -2, -3, ... when taken).

    A new run (no trainer.resume) refuses a named folder that already holds files. Under data
    parallelism only the main rank claims; the others only compute the path.
    """
    root = Path(cfg.output_dir)
    if cfg.name:
        run_dir = root / cfg.name
        if main_rank and not cfg.trainer.resume and run_dir.is_dir() and any(run_dir.iterdir()):
            raise ConfigError(f"invalid config key 'name': the run folder {run_dir} already exists; choose "
                              "another name, or continue that run with trainer.resume=last")
        if main_rank:
            run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not main_rank:
        return root / stamp
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        run_dir = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()  # atomic: of two runs racing for one name, exactly one gets it
            return run_dir
        except FileExistsError:
            continue
    raise ConfigError(f"invalid config key 'output_dir': no free run folder for {stamp} in {root}")
