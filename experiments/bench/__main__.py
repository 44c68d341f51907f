"""Benchmarks: `python -m experiments.bench <name> [--options]`; each prints one JSON object per measurement."""
from __future__ import annotations

import sys

from experiments.bench import adapterdrop, cached_rerank, data, evaluation, search

BENCHMARKS = {"adapterdrop": adapterdrop.main, "cached_rerank": cached_rerank.main, "search": search.main, "data": data.main, "eval": evaluation.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        sys.exit(f"usage: python -m experiments.bench {{{'|'.join(BENCHMARKS)}}} [--help]")
    BENCHMARKS[sys.argv[1]](sys.argv[2:])
