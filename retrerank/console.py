"""The `retrerank` command: one subcommand per `python -m experiments.<module>` entry point.

`retrerank <command> [args ...]` behaves exactly as `python -m experiments.<module> [args ...]`: the
same `main(argv)`, called through retrerank.cli.run_main (one-line user errors, `--debug`). A command's
module is imported only when it runs, so `retrerank --help` is quick; the one-line descriptions it lists
are read from the modules' docstrings (retrerank.cli.purpose). Hand-written rather than argparse
subparsers: each command parses its own arguments, and subparsers would import every module to build them.
"""

from __future__ import annotations

import importlib
import sys
import textwrap

from retrerank.cli import DEBUG_FLAG, HELP_FLAGS, HELP_WIDTH, purpose, run_main

# command -> the module whose main(argv) it runs
COMMANDS = {
    "run": "experiments.run",
    "evaluate": "experiments.evaluate",
    "search": "experiments.search",
    "serve": "experiments.serve",
    "bench": "experiments.bench.__main__",
    "prepare": "experiments.prepare",
    "multirun": "experiments.multirun",
    "grid": "experiments.grid",
    "aggregate": "experiments.aggregate",
    "report": "experiments.report",
    "gpu-check": "experiments.gpu_check",
    "twins": "experiments.analysis.twins",
    "fusion-weight": "experiments.analysis.fusion_weight",
    "larger-split": "experiments.analysis.larger_split",
    "plateau": "experiments.analysis.plateau",
}


def python_m(module: str) -> str:
    """The `python -m` name of a command's module (a package's __main__ runs as the package)."""
    return module.removesuffix(".__main__")


def help_text() -> str:
    width = max(map(len, COMMANDS)) + 4
    lines = [
        "usage: retrerank <command> [args ...]",
        "       retrerank <command> --help",
        "",
        "Retrieve fast, rerank smart: text-image retrieval with a bi-encoder that retrieves and a",
        "cross-encoder that reranks, fine-tuned jointly, with adapters and AdapterDrop.",
        "`retrerank <command> args` is `python -m <module> args` (the module is named below).",
        "",
        "commands:",
    ]
    for name, module in COMMANDS.items():
        about = f"{purpose(module)} ({python_m(module)})"
        lines += textwrap.wrap(
            about,
            HELP_WIDTH,
            initial_indent=f"  {name:<{width - 2}}",
            subsequent_indent=" " * width,
            break_on_hyphens=False,
        )
    lines += [
        "",
        "options:",
        "  --help, -h  this list; `retrerank <command> --help`: a command's own options",
        "  --debug     a config or data error shows its traceback (a command's option, also before it)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [DEBUG_FLAG]:  # `retrerank --debug run ...`: the flag is the command's (run_main reads it)
        argv = argv[1:2] + [DEBUG_FLAG] + argv[2:]
    if not argv or argv == [DEBUG_FLAG]:
        sys.stderr.write(help_text())
        return 2
    if argv[0] in HELP_FLAGS:
        sys.stdout.write(help_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(
            f"retrerank: unknown command {command!r}; the commands are {', '.join(COMMANDS)}\n"
            "(retrerank --help says what each does)\n"
        )
        return 2
    module = importlib.import_module(COMMANDS[command])
    run_main(module.main, rest)  # its return value (a run folder, a row) is not an exit status
    return 0


if __name__ == "__main__":
    sys.exit(main())
