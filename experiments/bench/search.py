"""Bi-encoder top-k search over stored embeddings: exact chunked search against FAISS.

For each corpus size (random unit vectors, dim 384 as MiniLM's) and each index kind, one fresh
Python process builds the index and searches 1000 queries for their top 10, so that its peak
memory (ru_maxrss of that process: Python, torch and the data together) is the index's alone.
Prints one JSON object per (size, kind): build and search time, peak memory, and for IVF the
recall@10 against exact search. Goal: exact search over 500k stays under 2 GB peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from experiments.bench.emit import emit
from retrerank.cli import argument_parser

KINDS = ("exact", "faiss_flat", "faiss_ivf")  # as eval.index


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 50_000) -> torch.Tensor:
    """[n, dim] float32 unit vectors, generated in chunks so that no temporary doubles the memory."""
    out = torch.empty(n, dim)
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), dim, generator=generator)
        out[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1)
    return out


def one(kind: str, size: int, dim: int, queries: int, k: int, nprobe: int) -> dict:
    from retrerank.retrieval.faiss_index import make_index
    from retrerank.retrieval.index import ExactIndex

    corpus, query = unit_vectors(size, dim, 0), unit_vectors(queries, dim, 1)
    nlist = max(1, int(4 * size**0.5))  # the usual rule of thumb: 4 sqrt(N) lists
    start = time.perf_counter()
    index = make_index(kind, corpus, nlist=nlist, nprobe=nprobe)
    if kind != "exact":
        del corpus  # FAISS holds its own copy; the exact index keeps the tensor itself
    built = time.perf_counter()
    _, rows = index.search(query, k)
    searched = time.perf_counter()
    row = {
        "kind": kind,
        "corpus": size,
        "dim": dim,
        "queries": queries,
        "k": k,
        "build_s": round(built - start, 3),
        "search_s": round(searched - built, 3),
        "ms_per_query": round(1000 * (searched - built) / queries, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if kind == "faiss_ivf":
        row.update(nlist=nlist, nprobe=nprobe)
        exact = ExactIndex(unit_vectors(size, dim, 0)).search(query, k)[1]
        hits = sum(len(set(a) & set(b)) for a, b in zip(rows.tolist(), exact.tolist()))
        row["recall_vs_exact"] = round(hits / exact.numel(), 4)
    return row


def main(argv: list[str]) -> None:
    parser = argument_parser("experiments.bench search", __doc__)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[5_000, 50_000, 500_000],
        metavar="N",
        help="corpus sizes (default: 5000 50000 500000)",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        metavar="KIND",
        help="index kinds, as eval.index (default: exact faiss_flat faiss_ivf)",
    )
    parser.add_argument("--dim", type=int, default=384, help="embedding width (default: 384)")
    parser.add_argument("--queries", type=int, default=1000, help="queries searched (default: 1000)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--nprobe", type=int, default=16, help="faiss_ivf: clusters searched per query (default: 16)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown:
        parser.error(f"--kinds: unknown index kinds {unknown}; choose from {list(KINDS)}")
    if min(*args.sizes, args.dim, args.queries, args.k, args.nprobe) < 1:
        parser.error("--sizes, --dim, --queries, --k and --nprobe must be >= 1")
    if args.one:  # the child's raw row: the parent adds the provenance of the command the user ran
        print(json.dumps(one(args.kinds[0], args.sizes[0], args.dim, args.queries, args.k, args.nprobe)))
        return
    for size in args.sizes:
        for kind in args.kinds:
            command = [
                sys.executable,
                "-m",
                "experiments.bench",
                "search",
                "--one",
                "--kinds",
                kind,
                "--sizes",
                str(size),
                "--dim",
                str(args.dim),
                "--queries",
                str(args.queries),
                "--k",
                str(args.k),
                "--nprobe",
                str(args.nprobe),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                emit({"kind": kind, "corpus": size, "error": done.stderr.strip().splitlines()[-1:]}, "search", argv)
                continue
            emit(json.loads(done.stdout.strip().splitlines()[-1]), "search", argv)
