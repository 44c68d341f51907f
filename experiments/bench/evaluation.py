"""The full retrieve-then-rerank evaluation at MSCOCO-5k scale: time and peak memory.

A generated region store of `--images` 5,000 x `--regions` 36 x `--dim` 2048 float16 features
(read lazily, as real stores are) with `--captions` 5 captions each (25,000), the default model
(MiniLM-L6 single-stream; its new parts untrained, which does not change the cost), and the one
evaluation pipeline with `--methods` (default bi and rerank@20, both directions). Prints one JSON
object: wall time, ms per query of each method, peak memory of the process (and of the GPU).
`--precision bf16|fp16` runs it under torch.autocast (the mixed-precision inference a GPU user
would pick); 32 is full float32. Extra `key=value` arguments change the model config (e.g.
model.join_layer=3, model.backbone=...). Goal: peak memory under 4 GB.
"""

from __future__ import annotations

import resource
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from experiments.bench.data import build_store, captions_for
from experiments.bench.emit import emit
from retrerank.build import build_encoders
from retrerank.cli import OVERRIDES_EPILOG, argument_parser
from retrerank.config import load
from retrerank.data.records import RetrievalSplit
from retrerank.data.stores.region_store import RegionStore
from retrerank.retrieval.methods import Method
from retrerank.retrieval.pipeline import RetrieveRerank

AUTOCAST = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv: list[str]) -> dict:
    parser = argument_parser("experiments.bench eval", __doc__, OVERRIDES_EPILOG)
    parser.add_argument("--images", type=int, default=5000, help="images in the generated store (default: 5000)")
    parser.add_argument("--regions", type=int, default=36, help="regions per image (default: 36)")
    parser.add_argument("--dim", type=int, default=2048, help="region feature width (default: 2048)")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["bi", "rerank@20"],
        metavar="METHOD",
        help="retrieval methods evaluated (default: bi rerank@20)",
    )
    parser.add_argument("--dir", default="runs/bench_eval", help="where the generated store is kept")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda (default: cuda where there is one)",
    )
    parser.add_argument(
        "--precision",
        choices=list(AUTOCAST),
        default="32",
        help="32: float32 | bf16 | fp16: under torch.autocast (default: 32)",
    )
    args, overrides = parser.parse_known_args(argv)
    # `--methods bi rerank@20 model.x=y` would take the override as a method: it is one
    overrides += [m for m in args.methods if "=" in m]
    args.methods = [m for m in args.methods if "=" not in m]
    if any("=" not in o for o in overrides):
        parser.error(f"unknown arguments {[o for o in overrides if '=' not in o]} (model overrides are key=value)")
    if min(args.images, args.regions, args.dim, args.captions) < 1:
        parser.error("--images, --regions, --dim and --captions must be >= 1")
    for method in args.methods:
        try:
            Method.parse(method)
        except ValueError as err:
            parser.error(f"--methods: {err}")
    cfg = load(None, overrides)  # a bad config or method stops here, before the store is built
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    store_path = folder / f"store_{args.images}x{args.regions}x{args.dim}.h5"
    build_store(store_path, args.images, args.regions, args.dim, "float16")
    store = RegionStore(store_path)
    captions = captions_for(store, folder / f"captions_{args.images}x{args.captions}.jsonl", args.captions)
    split = RetrievalSplit("test", store.images(), captions)

    torch.manual_seed(cfg.seed)
    bi, cross = build_encoders(cfg.model, args.dim)
    device = torch.device(args.device)
    bi.to(device), cross.to(device)
    pipeline = RetrieveRerank(
        bi,
        cross,
        batch_size=cfg.eval.batch_size,
        rerank_batch_size=cfg.eval.rerank_batch_size,
        chunk_size=cfg.eval.chunk_size,
        progress=True,
        index=cfg.eval.index,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dtype = AUTOCAST[args.precision]
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
        metrics = pipeline.evaluate(split, args.methods, cfg.eval.ks)
    seconds = time.perf_counter() - start
    row = {
        "images": len(split.images),
        "captions": len(split.captions),
        "regions": args.regions,
        "dim": args.dim,
        "methods": args.methods,
        "overrides": overrides,
        "device": str(device),
        "precision": args.precision,
        "seconds": round(seconds, 1),
        **{key.removeprefix("test/"): round(value, 3) for key, value in metrics.items() if "ms" in key},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "goal": "peak memory < 4 GB",
    }
    if device.type == "cuda":
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return emit(row, "eval", argv)
