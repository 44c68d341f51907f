"""Checkpoints a run can always resume from: written atomically, saved after the validation of
their step, and on resume the newest one that loads.

- Lightning writes a checkpoint into a temporary file in the system's temp folder, then moves it
  into place: across file systems that move is a copy, so a full disk leaves a truncated file where
  the good one was. `AtomicCheckpointIO` writes next to the target and renames.
- The resume point (`last.ckpt`, every `trainer.checkpoint_every_n_steps`) was saved at the end of
  a training step, before that step's validation: an interruption during the validation resumed
  after it, never validated that step, and could pick another best checkpoint. `LastCheckpoint`
  saves at a validating step only once the validation (and the best-checkpoint choice) is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from retrerank.io import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_file(path) as f:  # a temporary file beside `path`, renamed over it once complete
            torch.save(checkpoint, f)


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every` steps; at a step that also validates (every `val_every`), saved
    after the validation, with Lightning's own deferral for checkpoints that wait for metrics."""

    def __init__(self, dirpath: str, every: int | None, val_every: int | None) -> None:
        super().__init__(
            dirpath=dirpath, filename="last", save_top_k=1, every_n_train_steps=every, enable_version_counter=False
        )
        self.val_every = val_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self._every_n_train_steps
        if every and self.val_every and step % every == 0 and step % self.val_every == 0:
            self._defer_save_until_validation = True  # on_validation_end saves it
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


@dataclass
class ResumePoint:
    path: str | None  # None: nothing to resume, start afresh
    step: int | None = None
    skipped: list[str] = field(default_factory=list)  # newer checkpoints that did not load, and why


def checkpoint_step(path: str | Path) -> int:
    """The global step a checkpoint was saved at; ValueError when it does not load."""
    try:  # mmap: the step only, without reading every tensor
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["global_step"])
    except Exception as err:  # truncated, damaged, or not a Lightning checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} does not load ({reason})") from None


def newest_loadable(candidates: list[Path]) -> ResumePoint:
    """Of `candidates`, the newest (by modification time) that loads; the ones skipped, with why."""
    skipped = []
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return ResumePoint(str(path), checkpoint_step(path), skipped)
        except ValueError as err:
            skipped.append(str(err))
    return ResumePoint(None, None, skipped)
