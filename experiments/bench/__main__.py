"""Benchmarks of speed and memory, each printing one JSON object per measurement, with its command, commit,
date and machine: `python -m experiments.bench <name> [--options]`.

A benchmark's module is imported only when it runs, so this list is quick to print.
"""

from __future__ import annotations

import importlib
import sys
import textwrap

from retrerank.cli import HELP_FLAGS, HELP_WIDTH, argument_parser, purpose, run_main

# name -> the module whose main(argv) runs it
BENCHMARKS = {
    "adapterdrop": "experiments.bench.adapterdrop",
    "cached_rerank": "experiments.bench.cached_rerank",
    "search": "experiments.bench.search",
    "data": "experiments.bench.data",
    "eval": "experiments.bench.evaluation",
    "rerank": "experiments.bench.rerank",
    "peers": "experiments.bench.peers",
}
USAGE = f"usage: python -m experiments.bench {{{','.join(BENCHMARKS)}}} [--options]"


def help_text() -> str:
    width = max(map(len, BENCHMARKS)) + 4
    lines = [USAGE, "", __doc__.strip(), "", "benchmarks:"]
    for name, module in BENCHMARKS.items():
        lines += textwrap.wrap(
            purpose(module),
            HELP_WIDTH + 10,
            initial_indent=f"  {name:<{width - 2}}",
            subsequent_indent=" " * width,
            break_on_hyphens=False,
        )
    lines += ["", "`python -m experiments.bench <name> --help`: what a benchmark measures and its options."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]):
    if argv and argv[0] in HELP_FLAGS:
        sys.stdout.write(help_text())
        return None
    if not argv or argv[0] not in BENCHMARKS:  # a usage error like any other command's (retrerank.cli)
        parser = argument_parser("experiments.bench", __doc__)
        parser.usage = USAGE.removeprefix("usage: ")
        which = f"unknown benchmark {argv[0]!r}" if argv else "no benchmark named"
        parser.error(f"{which}: name one of {', '.join(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    run_main(main)
