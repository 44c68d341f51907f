"""Checkpoints a run can always resume from: written atomically, saved after the validation of
their step, and on resume the newest one that loads.

- Lightning writes a checkpoint into a temporary file in the system's temp folder, then moves it
  into place: across file systems that move is a copy, so a full disk leaves a truncated file where
  the good one was. `AtomicCheckpointIO` writes next to the target and renames.
- The resume point (`last.ckpt`, every `trainer.checkpoint_every_n_steps`) was saved at the end of
  a training step, before that step's validation: an interruption during the validation resumed
  after it, never validated that step, and could pick another best checkpoint. `LastCheckpoint`
  saves at a validating step only once the validation (and the best-checkpoint choice) is done.

Every checkpoint retrerank reads goes through `load_checkpoint`: weights only (a checkpoint is data,
never code), and any file that does not load (missing, cut short, garbage, carrying pickled code)
is a CheckpointError of one line that names the file and says why.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from retrerank.errors import CheckpointError
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


def load_checkpoint(path: str | Path, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint's contents, loaded as data only (`weights_only`: a pickled callable never runs);
    `mmap`: tensors stay on disk until read. CheckpointError (one line, naming the file) when it does not load."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} does not load: it is a folder, not a checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):  # not a torch file at all
            raise CheckpointError(f"{path} does not load: not a checkpoint file ({_first_line(err)})") from None
        if "Unsupported operand" in str(err):  # bytes that are no pickle: garbage, not code
            raise CheckpointError(f"{path} does not load: not a checkpoint file (not a pickle)") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = f"it names {found[1]}" if found else _first_line(err)
        raise CheckpointError(
            f"refusing to load {path}: it holds more than tensors and plain values, and retrerank "
            f"never unpickles code from a file ({reason})"
        ) from None
    except Exception as err:  # OSError, EOFError, a legacy pickle's KeyError ...: the file, not our code
        text = str(err)
        if _is_zip(path):  # torch.save's format, but its end (the central directory) or a record is missing
            reason = text.split(". ")[0] if "failed reading zip archive" in text else _first_line(err)
            raise CheckpointError(f"{path} does not load: it is damaged or cut short ({reason})") from None
        if "mmap can only be used" in text:
            reason = "not torch.save's zip format"
            raise CheckpointError(f"{path} does not load: not a checkpoint file ({reason})") from None
        raise CheckpointError(f"{path} does not load: not a checkpoint file ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} does not load: not a Lightning checkpoint (it holds a {type(state).__name__}, not a dict)"
        )
    return state


def _is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def checkpoint_step(path: str | Path) -> int:
    """The global step a checkpoint was saved at; CheckpointError (a ValueError) when it does not load."""
    state = load_checkpoint(path, mmap=True)  # mmap: the step only, without reading every tensor
    try:
        return int(state["global_step"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path} does not load: not a Lightning checkpoint (no global_step)") from None


def named_resume_point(path: str) -> ResumePoint:
    """The checkpoint `trainer.resume` names by its path, with its step; ConfigError naming the key when
    it is not there or does not load."""
    from retrerank.config import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"invalid config key 'trainer.resume': checkpoint not found: {path}")
    try:
        return ResumePoint(path, checkpoint_step(path))
    except ValueError as err:
        raise ConfigError(f"invalid config key 'trainer.resume': {err}") from None


def newest_loadable(candidates: list[Path]) -> ResumePoint:
    """Of `candidates`, the newest (by modification time) that loads; the ones skipped, with why."""
    skipped = []
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return ResumePoint(str(path), checkpoint_step(path), skipped)
        except ValueError as err:
            skipped.append(str(err))
    return ResumePoint(None, None, skipped)
