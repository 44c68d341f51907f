"""What made a result: the command, the commit, the date and the machine.

Every run folder and every benchmark line carries this record, and the evidence files under
docs/results keep it, so a published number names what produced it.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: Path = ROOT) -> str:
    """The short commit of the checkout, with "+dirty" when tracked files differ from it; "unknown" outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> dict[str, object]:
    """CPU model, core count, torch's thread count and, where one is used, the GPU's name."""
    import torch

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "gpu": None,
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command(argv: list[str] | None = None, module: str | None = None) -> str:
    """The command line as a user would type it again (`python -m <module> args`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    head = f"python -m {module}" if module else Path(sys.argv[0]).name
    return " ".join([head] + [shlex.quote(a) for a in argv])


def record(argv: list[str] | None = None, module: str | None = None, threads: int | None = None) -> dict[str, object]:
    """{"command", "commit", "date", "machine"}: the keys every evidence file carries."""
    return {
        "command": command(argv, module),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(threads),
    }
