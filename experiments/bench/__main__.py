"""Benchmarks: `python -m experiments.bench <name> [--options]`; each prints one JSON object per measurement."""
from __future__ import annotations

import sys

from experiments.bench import adapterdrop, cached_rerank, data, evaluation, rerank, search
from retrerank.cli import run_main

BENCHMARKS = {"adapterdrop": adapterdrop.main, "cached_rerank": cached_rerank.main, "search": search.main, "data": data.main, "eval": evaluation.main,
              "rerank": rerank.main}


def main(argv: list[str]):
    if not argv or argv[0] not in BENCHMARKS:
        sys.exit(f"usage: python -m experiments.bench {{{'|'.join(BENCHMARKS)}}} [--help]")
    return BENCHMARKS[argv[0]](argv[1:])


if __name__ == "__main__":
    run_main(main)
