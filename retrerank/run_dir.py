"""Run folders: a new run claims a folder of its own; only a resume goes back into one.

Claiming is atomic, so two runs started in the same second (or given the same name) can never share
a folder, mix checkpoints or overwrite each other's config and curves: a timestamped folder is made
with one mkdir, which fails when it exists; a named folder also gets a marker file (`.claimed`)
created with O_CREAT | O_EXCL, so of two starts that find the same empty folder exactly one wins.

A start that fails (or is interrupted) before its first training step removes what it wrote: the
folder itself where it made it, its contents where it found it empty (`RunStart`), so that the same
name can be started again. An interrupted training exits with status 1 and the command that resumes it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from retrerank.config import Config, ConfigError

MARKER = ".claimed"  # a named run folder's claim: whoever creates it (O_EXCL) owns the folder
# what a start writes into its folder before its first training step (and nothing else is removed)
START_FILES = {MARKER, "config.yaml", "command.txt", "provenance.json", "logs", "checkpoints", "tensorboard"}
START_FILES |= {"wandb", "wandb_run_id"}


@dataclass(frozen=True)
class Claim:
    path: Path
    made: bool = False  # this start made the folder (a failed start removes it)
    fresh: bool = False  # the folder was new or empty: everything in it is this start's
    parents: tuple[Path, ...] = ()  # the folders above it that this start made (output_dir), deepest first


def _make_parents(folder: Path) -> tuple[Path, ...]:
    """mkdir -p `folder`; the folders it made, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if missing:
        missing[0].mkdir(parents=True, exist_ok=True)
    return tuple(missing)


def claim(cfg: Config, main_rank: bool = True) -> Claim:
    """The run's folder: `output_dir/name`, or a timestamp (with -2, -3, ... when taken), claimed atomically.

    A new run (no trainer.resume) refuses a named folder that already holds files. Under data
    parallelism only the main rank claims; the others only compute the path. A folder that cannot
    be made (a read-only file system, a file in the way) is a ConfigError naming output_dir.
    """
    root = Path(cfg.output_dir)
    try:
        if cfg.name:
            return _claim_named(root / cfg.name, bool(cfg.trainer.resume), main_rank)
        return _claim_stamped(root, main_rank)
    except OSError as err:
        raise ConfigError(
            f"invalid config key 'output_dir': cannot create a run folder in {root}: {err.strerror or err}"
        ) from None


def claim_run_dir(cfg: Config, main_rank: bool = True) -> Path:
    """The path of `claim(cfg, main_rank)`."""
    return claim(cfg, main_rank).path


def _claim_named(run_dir: Path, resume: bool, main_rank: bool) -> Claim:
    if not main_rank:
        return Claim(run_dir)
    parents = _make_parents(run_dir.parent)
    try:
        run_dir.mkdir()
        made = True
    except FileExistsError:
        made = False
        if not run_dir.is_dir():
            raise ConfigError(
                f"invalid config key 'name': {run_dir} is a file, not a run folder; choose another name"
            ) from None
    if resume:  # a resume goes back into its run's folder (or starts one)
        return Claim(run_dir, made, made, parents)
    taken = ConfigError(
        f"invalid config key 'name': the run folder {run_dir} already exists; choose "
        "another name, or continue that run with trainer.resume=last"
    )
    if any(run_dir.iterdir()):
        raise taken
    try:  # atomic: of two starts that found this folder empty, exactly one creates the marker
        os.close(os.open(run_dir / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise taken from None
    return Claim(run_dir, made, True, parents)


def _claim_stamped(root: Path, main_rank: bool) -> Claim:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not main_rank:
        return Claim(root / stamp)
    parents = _make_parents(root)
    for n in range(1, 1000):
        run_dir = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()  # atomic: of two runs racing for one name, exactly one gets it
            return Claim(run_dir, True, True, parents)
        except FileExistsError:
            continue
    raise ConfigError(f"invalid config key 'output_dir': no free run folder for {stamp} in {root}")


class RunStart:
    """A claimed run folder, from the claim to the end of training (`with RunStart(...) as start:`).

    Set `start.trainer` once it is built: its global step tells whether training has started. When
    the block fails before the first training step (a data error, a bad resume, Ctrl-C while the
    model loads), the main rank removes what this start wrote, where the folder was new or empty
    (`Claim.fresh`) and holds nothing but START_FILES: the folder (and the empty output_dir above
    it) where this start made them, else its contents. SIGTERM or Ctrl-C (SIGINT) become exit
    status 1 with one line that says what to run next: Lightning itself would exit with status 0 on
    SIGTERM, and with 1 and no word on Ctrl-C.
    """

    def __init__(self, claimed: Claim, argv: list[str], main_rank: bool = True):
        self.path, self.claim, self.argv, self.main_rank = claimed.path, claimed, argv, main_rank
        self.trainer = None

    def __enter__(self) -> RunStart:
        return self

    def __exit__(self, kind, err, traceback) -> bool:
        if err is None:
            return False
        step = self.trainer.global_step if self.trainer is not None else 0
        removed = step == 0 and self.main_rank and self.release()
        signal = stop_signal(err)
        if signal is None:
            return False
        if removed:
            raise SystemExit(
                f"interrupted by {signal} before the first training step; its run folder {self.path} was "
                "removed: run the same command to start again"
            ) from None
        raise SystemExit(
            f"interrupted by {signal} at step {step}; nothing tested, no metrics.json. "
            f"Go on from the last checkpoint with: {resume_command(self.argv, self.path)}"
        ) from None

    def release(self) -> bool:
        """Remove what this start wrote (see the class doc); whether it did."""
        if not self.claim.fresh or not self.path.is_dir():
            return False
        entries = list(self.path.iterdir())
        if any(e.name not in START_FILES for e in entries) or any(self.path.rglob("*.ckpt")):
            return False  # something this start does not write: not ours to remove
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if self.claim.made:
            self.path.rmdir()
            for parent in self.claim.parents:  # output_dir, where this start made it and it stayed empty
                try:
                    parent.rmdir()
                except OSError:
                    break
        return True


def stop_signal(err: BaseException) -> str | None:
    """The signal that stopped a run, from the exception it ended with; None: not a signal."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, SIGTERMException):  # Lightning's, raised at the next step or batch boundary
        return "SIGTERM"
    if isinstance(err, KeyboardInterrupt):
        return "Ctrl-C (SIGINT)"
    if isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt):
        return "Ctrl-C (SIGINT)"  # Lightning's fit catches KeyboardInterrupt, tells the callbacks, exits with 1
    return None


# keys a resumed run may change: where and how fast it runs and logs, never what it trains
MAY_CHANGE_ON_RESUME = (
    "trainer.resume",
    "num_threads",
    "data.num_workers",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "logger",
    "wandb.",
    "eval.batch_size",
    "eval.rerank_batch_size",
    "eval.chunk_size",
)


def flat_config(tree: object, prefix: str = "") -> dict[str, object]:
    """A nested config container as {dotted key: value}."""
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(flat_config(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def check_resume_config(run_dir: Path, cfg: Config) -> None:
    """A resume goes on with the config its folder was started with: ConfigError listing every key
    that differs, except those in MAY_CHANGE_ON_RESUME."""
    from omegaconf import OmegaConf

    from retrerank.config import Config as Schema

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:  # the schema's defaults fill keys an older version did not write
        saved = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Schema), OmegaConf.load(path)))
    except Exception as err:  # a config an older version wrote, or a damaged file: say so, do not guess
        raise ConfigError(f"invalid config key 'trainer.resume': cannot read the run's own {path} ({err})") from None
    new = OmegaConf.to_container(OmegaConf.structured(cfg))
    old_flat, new_flat = flat_config(saved), flat_config(new)
    differ = sorted(
        key
        for key in old_flat.keys() | new_flat.keys()
        if old_flat.get(key) != new_flat.get(key) and not key.startswith(MAY_CHANGE_ON_RESUME)
    )
    if differ:
        changes = ", ".join(f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}" for key in differ)
        raise ConfigError(
            f"invalid config key 'trainer.resume': the run in {run_dir} was started with another config "
            f"({changes}); resume with the same values, or start a new run (only "
            f"{', '.join(MAY_CHANGE_ON_RESUME)} may change on resume)"
        )


def record_command(run_dir: Path, argv: list[str]) -> None:
    """Append the command line to the run's command.txt (a resumed run adds its own line)."""
    import shlex

    from retrerank.io import write_text_atomic

    path = run_dir / "command.txt"
    before = path.read_text() if path.is_file() else ""
    write_text_atomic(path, before + "python -m experiments.run " + shlex.join(argv) + "\n")


def record_provenance(run_dir: Path, argv: list[str], threads: int | None = None) -> None:
    """Write provenance.json (command, commit, date, machine); a resume adds its own record under "resumed"."""
    import json

    from retrerank.io import write_json_atomic
    from retrerank.provenance import record

    path = run_dir / "provenance.json"
    now = record(argv, "experiments.run", threads)
    if path.is_file():
        first = json.loads(path.read_text())
        first.setdefault("resumed", []).append(now)
        now = first
    write_json_atomic(path, now)


def resume_command(argv: list[str], run_dir: Path) -> str:
    """The command line that continues the run of `argv` in its own folder."""
    import shlex

    keep = [arg for arg in argv if not arg.startswith(("name=", "output_dir=", "trainer.resume="))]
    return "python -m experiments.run " + shlex.join(
        keep + [f"output_dir={run_dir.parent}", f"name={run_dir.name}", "trainer.resume=last"]
    )
