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
            raise ConfigError(
                f"invalid config key 'name': the run folder {run_dir} already exists; choose "
                "another name, or continue that run with trainer.resume=last"
            )
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


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
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
    old_flat, new_flat = _flat(saved), _flat(new)
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
