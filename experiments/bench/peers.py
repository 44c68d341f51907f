"""retrerank beside the tools a user would otherwise pick, on the same machine, threads and weights.

One JSON object per measurement and peer, with `ours_seconds` and `peer_seconds` (the median of each
over `--repeats`), `ratio` = peer_seconds / ours_seconds (above 1: retrerank is faster),
`ratio_median`, `ratio_min`, `ratio_max` (the per-repeat paired ratios: the two sides are timed
interleaved, ours, peer, peer, ours, ..., so a busy machine slows both alike; experiments.bench.timing),
and `equal`: whether the outputs agree, with how closely. Each side first runs once untimed on a
small slice (thread pools, allocator, lazy imports).

- `text_embed`: the bi-encoder text embeddings of the default config's model before fine-tuning (the
  embedded MiniLM, built as a run builds it, embedded by the evaluation pipeline) against
  sentence-transformers' `SentenceTransformer(<the same folder>).encode(normalize_embeddings=True)`,
  on `--captions` generated captions in batches of `--batch-size` (default: eval.batch_size), both
  truncated to model.max_text_len tokens. equal: every row's cosine >= 0.9999 (`min_cosine`).
- `exact_search`: top-`--k` over `--corpus` x `--dim` random unit vectors for `--queries` queries:
  retrerank's ExactIndex (chunked as the pipeline searches, eval.chunk_size rows) against
  `sentence_transformers.util.semantic_search` and FAISS `IndexFlatIP` (faiss-cpu, in the dev extra;
  its row says `skipped` where faiss is missing, and FAISS gets the same number of threads). Only the
  search is timed (FAISS's index is built once beforehand). equal: the same ids, ties aside (a query
  whose ids differ passes when its k scores agree within 1e-5); `same_ids` is the fraction of shared
  ids, `max_abs_diff` the largest difference of the sorted top-k scores.
  `ours_peak_mb` / `peer_peak_mb`: memory, read as the process's resident-set high-water mark (Linux
  VmHWM) in a fresh subprocess per side: the corpus and queries are made, the mark is reset
  (/proc/self/clear_refs), then the side builds its index (FAISS copies the corpus) and searches once;
  the figure is the high-water mark minus the resident set before. tracemalloc does not see torch's
  allocations, hence a process measure. Null where /proc is not available, or with `--no-memory`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from experiments.bench.data import WORDS
from experiments.bench.emit import emit
from experiments.bench.timing import interleaved, ratio_stats
from retrerank.cli import OVERRIDES_EPILOG, argument_parser
from retrerank.config import EvalConfig, load

MIN_COSINE = 0.9999
SCORE_TOLERANCE = 1e-5
SEARCH_PEERS = ("sentence-transformers semantic_search", "faiss IndexFlatIP")
MISSING_FAISS = "faiss is not installed (pip install faiss-cpu, or the dev extra)"
REPO = Path(__file__).resolve().parents[2]


def generated_captions(n: int, seed: int = 0) -> list[str]:
    """n random captions of 6 to 15 words from a small vocabulary."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    return [" ".join(words[rng.integers(0, len(words), rng.integers(6, 16))]) for _ in range(n)]


def unit_vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    """n random rows of norm 1 (normalised in place: no second copy of a large corpus)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x.div_(x.norm(dim=1, keepdim=True))


def timed_pair(ours, peers: dict, device, repeats: int) -> dict[str, list[float]]:
    return interleaved({"ours": ours, **peers}, device, warmup=0, repeats=repeats)


def timing_keys(times: dict[str, list[float]], peer: str) -> dict:
    ours_s, peer_s = statistics.median(times["ours"]), statistics.median(times[peer])
    return {
        "ours_seconds": round(ours_s, 4),
        "peer_seconds": round(peer_s, 4),
        "ratio": round(peer_s / ours_s, 4),
        **ratio_stats(times[peer], times["ours"]),
        "repeats": len(times["ours"]),
    }


# text_embed


def text_embed(args, overrides: list[str], device: torch.device) -> dict:
    from sentence_transformers import SentenceTransformer

    from retrerank.backbones.single_stream import resolve_backbone_path
    from retrerank.build import build_encoders
    from retrerank.retrieval.pipeline import RetrieveRerank

    cfg = load(None, overrides)
    batch = args.batch_size or cfg.eval.batch_size
    torch.manual_seed(cfg.seed)
    bi, _ = build_encoders(cfg.model, cfg.data.synthetic.feature_dim)
    ours = RetrieveRerank(bi.to(device), None, batch_size=batch, progress=False)
    folder = resolve_backbone_path(cfg.model.backbone)
    peer = SentenceTransformer(folder, device=str(device))
    peer.max_seq_length = cfg.model.max_text_len  # the same truncation as ours
    captions = generated_captions(args.captions)

    def encode(texts):
        return peer.encode(
            texts, batch_size=batch, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
        )

    ours.embed_texts(captions[: 2 * batch])  # warm-up
    encode(captions[: 2 * batch])
    out = {}
    times = timed_pair(
        lambda: out.__setitem__("ours", ours.embed_texts(captions)),
        {"peer": lambda: out.__setitem__("peer", encode(captions))},
        device,
        args.repeats,
    )
    a, b = out["ours"].float().cpu(), out["peer"].float().cpu()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    min_cosine = float(cosine.min())
    return {
        "benchmark": "peers",
        "measurement": "text_embed",
        "peer": "sentence-transformers encode",
        **timing_keys(times, "peer"),
        "equal": bool(a.shape == b.shape and min_cosine >= MIN_COSINE),
        "min_cosine": round(min_cosine, 7),
        "captions": len(captions),
        "batch_size": batch,
        "max_text_len": cfg.model.max_text_len,
        "backbone": cfg.model.backbone,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "overrides": overrides,
    }


# exact_search


def faiss_or_none():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def searchers(corpus: torch.Tensor, k: int, chunk_size: int) -> dict:
    """name -> search(queries) for ours and every peer that is installed (see `searcher`)."""
    sides = ["ours", SEARCH_PEERS[0]] + ([SEARCH_PEERS[1]] if faiss_or_none() is not None else [])
    return {side: searcher(side, corpus, k, chunk_size) for side in sides}


def searcher(side: str, corpus: torch.Tensor, k: int, chunk_size: int):
    """One side's search(queries), its index built here; its own result type is converted outside
    the timed call (`as_tensors`)."""
    if side == "ours":
        from retrerank.retrieval.index import ExactIndex

        index = ExactIndex(corpus)
        return lambda q: index.search(q, k, chunk_size=chunk_size)  # as RetrieveRerank searches
    if side == SEARCH_PEERS[0]:
        from sentence_transformers import util

        return lambda q: util.semantic_search(q, corpus, top_k=k)
    faiss = faiss_or_none()
    faiss.omp_set_num_threads(torch.get_num_threads())
    flat = faiss.IndexFlatIP(corpus.shape[1])
    flat.add(corpus.numpy())
    return lambda q: flat.search(q.numpy(), k)


def as_tensors(name: str, result) -> tuple[torch.Tensor, torch.Tensor]:
    if name == SEARCH_PEERS[0]:  # one list of {"corpus_id", "score"} per query
        scores = torch.tensor([[hit["score"] for hit in hits] for hits in result])
        ids = torch.tensor([[hit["corpus_id"] for hit in hits] for hits in result])
        return scores, ids
    if name == SEARCH_PEERS[1]:
        return torch.from_numpy(result[0]), torch.from_numpy(result[1])
    return result


def agreement(ours: tuple[torch.Tensor, torch.Tensor], peer: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Same ids, ties aside: a query whose id sets differ still agrees when its scores do."""
    (s1, i1), (s2, i2) = ours, peer
    k = i1.shape[1]
    shared = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(i1, i2)]
    diff = (s1.sort(dim=1, descending=True).values - s2.float().sort(dim=1, descending=True).values).abs()
    tie_only = diff.max(dim=1).values <= SCORE_TOLERANCE
    equal = all(n == k or tie for n, tie in zip(shared, tie_only.tolist()))
    return {
        "equal": bool(equal and i1.shape == i2.shape),
        "same_ids": round(sum(shared) / (k * len(shared)), 6),
        "max_abs_diff": float(diff.max()),
    }


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(side: str, corpus: int, dim: int, queries: int, k: int, chunk_size: int, threads: int) -> None:
    """Run in a fresh process: print the extra resident memory (MB) of one side's index + one search."""
    torch.set_num_threads(threads)
    data = unit_vectors(corpus, dim, seed=0)
    q = unit_vectors(queries, dim, seed=1)
    if side != "ours":  # its library's import is not the search's memory
        from sentence_transformers import util  # noqa: F401

        faiss_or_none()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    except OSError:
        pass
    before = rss_kb("VmRSS")
    as_tensors(side, searcher(side, data, k, chunk_size)(q))
    print(json.dumps({"peak_mb": round((rss_kb("VmHWM") - before) / 1024, 1)}))


def peak_mb(side: str, args, chunk_size: int) -> float | None:
    if args.no_memory or not Path("/proc/self/status").is_file():
        return None
    code = (
        "import sys; from experiments.bench.peers import memory_child; "
        "memory_child(sys.argv[1], *map(int, sys.argv[2:]))"
    )
    sizes = [args.corpus, args.dim, args.queries, args.k, chunk_size, torch.get_num_threads()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", code, side, *map(str, sizes)], capture_output=True, text=True, cwd=REPO, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe of {side} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def exact_search(args) -> list[dict]:
    chunk_size = EvalConfig().chunk_size
    corpus = unit_vectors(args.corpus, args.dim, seed=0)
    queries = unit_vectors(args.queries, args.dim, seed=1)
    fns = searchers(corpus, args.k, chunk_size)
    for fn in fns.values():  # warm-up
        fn(queries[:10])
    out = {}
    calls = {name: (lambda name=name, fn=fn: out.__setitem__(name, fn(queries))) for name, fn in fns.items()}
    times = timed_pair(calls.pop("ours"), calls, "cpu", args.repeats)
    ours = as_tensors("ours", out["ours"])
    ours_peak = peak_mb("ours", args, chunk_size)
    common = {"corpus": args.corpus, "dim": args.dim, "queries": args.queries, "k": args.k}
    common.update({"chunk_size": chunk_size, "threads": torch.get_num_threads(), "device": "cpu"})
    rows = []
    for peer in SEARCH_PEERS:
        row = {"benchmark": "peers", "measurement": "exact_search", "peer": peer}
        if peer not in fns:
            rows.append({**row, "skipped": MISSING_FAISS, **common})
            continue
        row.update(timing_keys(times, peer))
        row.update({"ours_peak_mb": ours_peak, "peer_peak_mb": peak_mb(peer, args, chunk_size)})
        row.update({**agreement(ours, as_tensors(peer, out[peer])), **common})
        rows.append(row)
    return rows


# rerank_loop, machine_peak


def rerank_loop(args, model) -> dict:
    from experiments.bench.rerank_loop import agreement, ours, per_query_loop

    pipeline, split = model.pipeline, model.test
    pipeline.state_dtype = torch.float32  # the uncached model's scores, to 1e-5
    texts, images, k = split.texts, list(split.images), min(args.rerank_k, len(split.images), len(split.captions))
    ours(pipeline, texts[:8], images[:8], min(k, 8))  # warm-up
    per_query_loop(pipeline, texts[:8], images[:8], min(k, 8))
    out = {}
    times = timed_pair(
        lambda: out.__setitem__("ours", ours(pipeline, texts, images, k)),
        {"peer": lambda: out.__setitem__("peer", per_query_loop(pipeline, texts, images, k))},
        args.device,
        args.repeats,
    )
    return {
        "benchmark": "peers",
        "measurement": "rerank_loop",
        "peer": "LAVIS compute_sim_matrix per-query loop",
        **timing_keys(times, "peer"),
        **agreement(out["ours"], out["peer"]),
        "images": len(images),
        "captions": len(texts),
        "k": k,
        "pairs": k * (len(images) + len(texts)),
        "state_dtype": "float32",
        "scoring": pipeline.scoring,
        **model_keys(args, model),
    }


def machine_peak(args, model) -> dict:
    from experiments.bench.machine_peak import measure

    row = measure(model.pipeline, model.test, model.system, model.train_batch, args.rerank_k, args.repeats)
    return {"benchmark": "peers", "measurement": "machine_peak", "peer": None, **row, **model_keys(args, model)}


def model_keys(args, model) -> dict:
    return {
        "checkpoint": args.checkpoint,
        "join_layer": model.cfg.model.join_layer,
        "backbone": model.cfg.model.backbone,
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


MEASUREMENTS = ("text_embed", "exact_search", "rerank_loop", "machine_peak")


def main(argv: list[str]) -> list[dict]:
    parser = argument_parser("experiments.bench peers", __doc__, OVERRIDES_EPILOG)
    parser.add_argument(
        "--only",
        choices=MEASUREMENTS,
        nargs="+",
        default=list(MEASUREMENTS),
        metavar="MEASUREMENT",
        help=f"run only these ({', '.join(MEASUREMENTS)}; default: all)",
    )
    parser.add_argument("--captions", type=int, default=10_000, help="text_embed: captions embedded (default: 10000)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="text_embed: batch size (default: eval.batch_size)"
    )
    parser.add_argument("--corpus", type=int, default=500_000, help="exact_search: corpus rows (default: 500000)")
    parser.add_argument("--dim", type=int, default=384, help="exact_search: embedding width (default: 384)")
    parser.add_argument("--queries", type=int, default=1000, help="exact_search: queries (default: 1000)")
    parser.add_argument("--k", type=int, default=10, help="exact_search: top-k (default: 10)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="rerank_loop, machine_peak: a run folder (default: the untrained default model)",
    )
    parser.add_argument("--data-root", default=None, help="with --checkpoint: where its data is (default: data/ here)")
    parser.add_argument("--rerank-k", type=int, default=20, help="rerank_loop, machine_peak: candidates per query")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats of each side (default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the config's / torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="exact_search: skip the peak-memory subprocesses")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda (default: cuda where there is one; exact_search runs on the CPU)",
    )
    args, overrides = parser.parse_with_overrides(argv)
    sizes = (args.captions, args.corpus, args.dim, args.queries, args.k, args.repeats, args.rerank_k)
    if min(*sizes, args.batch_size or 1) < 1:
        parser.error("--captions, --corpus, --dim, --queries, --k, --rerank-k, --repeats and --batch-size must be >= 1")
    if args.k > args.corpus:
        parser.error(f"--k {args.k} exceeds --corpus {args.corpus}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if "text_embed" in args.only:
        rows.append(emit(text_embed(args, overrides, torch.device(args.device)), "peers", argv))
    if "exact_search" in args.only:
        rows += [emit(row, "peers", argv) for row in exact_search(args)]
    if {"rerank_loop", "machine_peak"} & set(args.only):
        from experiments.bench.run_model import run_model

        model = run_model(args.checkpoint, args.data_root, overrides, args.device)
        for name, measure in (("rerank_loop", rerank_loop), ("machine_peak", machine_peak)):
            if name in args.only:
                rows.append(emit(measure(args, model), "peers", argv))
    return rows
