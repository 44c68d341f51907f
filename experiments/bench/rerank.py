"""Retrieve-then-rerank against the cross-encoder over all pairs: the cost, and with a run its quality.

Reranking k candidates per query scores k * (N + M) pairs for N image and M text queries, where
the cross-encoder over all pairs scores N * M. So the ideal speed-up of reranking is
N * M / (k * (N + M)); `fraction_of_ideal` says how much of it the pipeline keeps once encoding,
retrieval and batching are paid. One run of the one evaluation pipeline (`RetrieveRerank.evaluate`)
times the three methods on the same corpus:
- `bi_seconds`: indexing both corpora + bi-encoder search in both directions;
- `rerank_seconds`: the same indexing + retrieve-then-rerank@k in both directions;
- `cross_all_seconds`: the cross-encoder scoring every pair (each item's lower layers once with
  late interaction, as reranking does).

Reranking (with the bi-encoder search, which shares its indexing) and all-pairs scoring are timed
interleaved over `--repeats` (experiments.bench.timing: one, the other, then the other way round),
so a busy machine slows both alike. The seconds are the medians over the repeats; `speedup` is the
median of the per-repeat speed-ups cross_all / rerank, `speedup_min` and `speedup_max` their spread.

Without `--checkpoint` the corpus is a generated region store (`--images` x `--regions` x `--dim`,
float16, `--captions-per-image` random captions each) and the model is the config's, its new parts
untrained, which does not change the cost; extra `key=value` arguments change the config. With
`--checkpoint RUN` it is that run's best checkpoint on the first `--images` images of its test
split (all of them by default), read from `--data-root` (default: data/ here, never the root stored
in the checkpoint), and the rsum of each method is printed too (`eval.key=value` and `num_threads=`
arguments may change its evaluation settings). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from experiments.bench.data import build_store, captions_for
from experiments.bench.emit import emit
from experiments.bench.run_model import trained_system
from experiments.bench.timing import interleaved, ratio_stats
from retrerank.build import build_datamodule, build_encoders
from retrerank.cli import OVERRIDES_EPILOG, argument_parser
from retrerank.config import EvalConfig, load
from retrerank.data.records import RetrievalSplit
from retrerank.data.stores.region_store import RegionStore
from retrerank.retrieval.pipeline import RetrieveRerank

GOAL = "fraction_of_ideal >= 0.85"
STAGE = "bench"


def ideal_speedup(images: int, captions: int, k: int) -> float:
    """Pairs scored by the cross-encoder over all pairs / pairs scored by reranking k per query."""
    return images * captions / (k * (images + captions))


def first_images(split: RetrievalSplit, n: int | None) -> RetrievalSplit:
    """The split's first n images and their captions (relevance to dropped images is dropped)."""
    if n is None or n >= len(split.images):
        return split
    images = split.images[:n]
    kept = {image.image_id for image in images}
    return RetrievalSplit(split.name, images, [c for c in split.captions if c.image_id in kept])


def generated(args: argparse.Namespace, overrides: list[str]) -> tuple[RetrieveRerank, RetrievalSplit, EvalConfig, int]:
    """The config's untrained model over a generated region store."""
    cfg = load(None, overrides)  # a bad config stops here, before the store is built
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    store_path = folder / f"store_{args.images}x{args.regions}x{args.dim}.h5"
    build_store(store_path, args.images, args.regions, args.dim, "float16")
    store = RegionStore(store_path)
    captions = captions_for(
        store, folder / f"captions_{args.images}x{args.captions_per_image}.jsonl", args.captions_per_image
    )
    torch.manual_seed(cfg.seed)
    bi, cross = build_encoders(cfg.model, args.dim)
    # the weight a trained run would add: its logit scale starts at 1 / temperature
    weight = cfg.eval.bi_weight if cfg.eval.bi_weight is not None else 1 / cfg.objective.temperature
    pipeline = RetrieveRerank(
        bi,
        cross,
        batch_size=cfg.eval.batch_size,
        rerank_batch_size=cfg.eval.rerank_batch_size,
        chunk_size=cfg.eval.chunk_size,
        scoring=cfg.eval.scoring,
        bi_weight=weight,
        progress=args.progress,
        index=cfg.eval.index,
        compile=cfg.eval.compile,
    )
    return pipeline, RetrievalSplit("test", store.images(), captions), cfg.eval, cfg.num_threads


def trained(args: argparse.Namespace, overrides: list[str]) -> tuple[RetrieveRerank, RetrievalSplit, EvalConfig, int]:
    """A run's best checkpoint over (the first --images images of) its own test split."""
    system, cfg = trained_system(args.checkpoint, args.data_root, overrides)
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("test")
    split = first_images(datamodule.test_split, args.images)
    return RetrieveRerank.from_config(system, cfg.eval, progress=args.progress), split, cfg.eval, cfg.num_threads


def seconds(metrics: dict[str, float], method: str, queries: dict[str, int]) -> float:
    """A method's search time over all queries of both directions (evaluate reports ms per query)."""
    return sum(metrics[f"{STAGE}/{method}/{d}_ms_per_query"] * n for d, n in queries.items()) / 1000


def main(argv: list[str]) -> dict:
    parser = argument_parser("experiments.bench rerank", __doc__, OVERRIDES_EPILOG)
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="corpus images (default: 100 generated, or all of a checkpoint's test split)",
    )
    parser.add_argument("--captions-per-image", type=int, default=5, help="generated corpus only")
    parser.add_argument("--k", type=int, default=20, help="candidates reranked per query")
    parser.add_argument("--checkpoint", default=None, help="a run folder: its best checkpoint and test split")
    parser.add_argument("--regions", type=int, default=36, help="regions per generated image")
    parser.add_argument("--dim", type=int, default=2048, help="region feature width of the generated store")
    parser.add_argument("--dir", default="runs/bench_rerank", help="where the generated store is kept")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="with --checkpoint: the folder that holds the run's dataset (default: data/ here)",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda (default: cuda where there is one)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats of each side (default: 3)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args, overrides = parser.parse_with_overrides(argv)
    if min(args.k, args.captions_per_image, args.images or 1, args.repeats) < 1:
        parser.error("--k, --images, --captions-per-image and --repeats must be >= 1")
    if args.checkpoint is None and args.images is None:
        args.images = 100
    pipeline, split, eval_cfg, threads = (trained if args.checkpoint else generated)(args, overrides)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    for model in (pipeline.bi_encoder, pipeline.cross_encoder):
        model.to(device)
    ks = [k for k in eval_cfg.ks if k <= min(len(split.images), len(split.captions))]
    methods = ["bi", f"rerank@{args.k}", "cross_all"]
    # warm-up on a few images: first calls pay one-off costs (thread pools, allocator, lazy imports)
    warm = first_images(split, 4)
    pipeline.evaluate(warm, methods, [1], stage="warmup")
    runs: dict[str, list[dict]] = {"retrieve": [], "cross_all": []}

    def run(name: str, which: list[str]):
        def evaluate():
            runs[name].append(pipeline.evaluate(split, which, ks, stage=STAGE))

        return evaluate

    start = time.perf_counter()
    # reranking (with the indexing it needs) and all-pairs scoring, interleaved: a busy machine slows both alike
    interleaved(
        {"retrieve": run("retrieve", methods[:2]), "cross_all": run("cross_all", methods[2:])}, device, 0, args.repeats
    )
    wall = time.perf_counter() - start

    queries = {"t2i": len(split.captions), "i2t": sum(1 for rows in split.image_captions() if len(rows))}
    index_s = [(m[f"{STAGE}/index_images_ms"] + m[f"{STAGE}/index_texts_ms"]) / 1000 for m in runs["retrieve"]]
    rerank_s = [i + seconds(m, f"rerank@{args.k}", queries) for i, m in zip(index_s, runs["retrieve"])]
    bi_s = [i + seconds(m, "bi", queries) for i, m in zip(index_s, runs["retrieve"])]
    cross_all_s = [m[f"{STAGE}/cross_all/i2t_ms_per_query"] * len(split.images) / 1000 for m in runs["cross_all"]]
    paired = ratio_stats(cross_all_s, rerank_s, 3)  # speed-up of each repeat: the two sides met the same load
    speedup = paired["ratio_median"]
    index, rerank, cross_all = map(statistics.median, (index_s, rerank_s, cross_all_s))
    metrics = {**runs["retrieve"][-1], **runs["cross_all"][-1]}  # the metrics are the same in every repeat
    ideal = ideal_speedup(len(split.images), len(split.captions), args.k)
    row = {
        "benchmark": "rerank",
        "images": len(split.images),
        "captions": len(split.captions),
        "k": args.k,
        "checkpoint": args.checkpoint,
        "overrides": overrides,
        "device": str(device),
        "index_seconds": round(index, 4),
        "rerank_seconds": round(rerank, 4),
        "cross_all_seconds": round(cross_all, 4),
        "bi_seconds": round(statistics.median(bi_s), 4),
        "speedup": speedup,
        "speedup_min": paired["ratio_min"],
        "speedup_max": paired["ratio_max"],
        "repeats": args.repeats,
        "ideal_speedup": round(ideal, 3),
        "fraction_of_ideal": round(speedup / ideal, 3),
        **{
            f"{d}_rerank_ms_per_query": round(
                statistics.median(m[f"{STAGE}/rerank@{args.k}/{d}_ms_per_query"] for m in runs["retrieve"]), 3
            )
            for d in queries
        },
        "wall_seconds": round(wall, 1),
        "goal": GOAL,
    }
    if args.checkpoint:  # quality means something only for a trained model on its own data
        row.update({f"{method}_rsum": round(metrics[f"{STAGE}/{method}/rsum"], 2) for method in methods})
    return emit(row, "rerank", argv)
