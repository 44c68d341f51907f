"""Reranking from cached lower layers: a model with join layer m = L/2 against m = 0.

Trains both models with the same recipe through `experiments.run` (or reuses their run folders
with --reuse), then, on the test split and through the one retrieval pipeline:
- rerank latency per query: the time of the reranking step (cross-encoder scoring of the top-r
  candidates, inputs included), the same queries and r, medians of timed repeats, both directions,
  and the whole search (retrieval + reranking) per query;
- rsum of rerank@20 from each run's own test evaluation;
- the cache's storage per corpus item (float16 layer-m states, padding removed).
Prints one JSON object per model and one with the comparison. Extra `key=value` arguments go to
both runs (e.g. trainer.max_steps=1500 model.backbone=...).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from experiments.bench.emit import emit
from retrerank.build import load_system
from retrerank.cli import OVERRIDES_EPILOG, argument_parser
from retrerank.data.datamodule import RetrievalDataModule
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.timing import measure


def train(run_dir: Path, m: int, overrides: list[str], reuse: bool) -> Path:
    from experiments.run import main as run

    if not (reuse and (run_dir / "metrics.json").is_file()):
        run([f"output_dir={run_dir.parent}", f"name={run_dir.name}", *overrides, f"model.join_layer={m}"])  # m wins
    return run_dir


def measure_model(run_dir: Path, device: torch.device, rerank_top: int, k: int, warmup: int, repeats: int) -> dict:
    system, cfg = load_system(run_dir / "checkpoints" / "best.ckpt")
    system.to(device).eval()
    datamodule = RetrievalDataModule(cfg.data, system.bi_encoder.tokenize)
    datamodule.setup("test")
    split = datamodule.test_split
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    pipeline.index_images(split.images)
    pipeline.index_texts(split.texts)
    texts, images = split.texts, split.images
    out = {
        "join_layer": system.cross_encoder.join_layer,
        "layers": system.backbone.num_layers,
        "device": str(device),
        "rerank_top": rerank_top,
        "t2i_queries": len(texts),
        "i2t_queries": len(images),
    }
    for direction, search, queries in (("t2i", pipeline.text_to_image, texts), ("i2t", pipeline.image_to_text, images)):

        def run(search=search, queries=queries):
            return search(queries, k, rerank_top)

        seconds = measure(run, device, warmup, repeats)
        out[f"{direction}_search_ms_per_query"] = round(1000 * seconds / len(queries), 3)
        out[f"{direction}_rerank_ms_per_query"] = round(
            pipeline.rerank_ms_per_query(queries, k, rerank_top, warmup, repeats), 3
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out[f"rerank@{rerank_top}_rsum"] = metrics.get(f"test/rerank@{rerank_top}/rsum")
    if pipeline.image_states is not None:
        out["cache_bytes_per_image"] = round(pipeline.image_states.bytes_per_item(), 1)
        out["cache_bytes_per_caption"] = round(pipeline.text_states.bytes_per_item(), 1)
    return out


def main(argv: list[str]) -> None:
    parser = argument_parser("experiments.bench cached_rerank", __doc__, OVERRIDES_EPILOG)
    parser.add_argument("--output-dir", default="runs/bench_cached_rerank", help="where the two runs are written")
    parser.add_argument("--join-layer", type=int, default=None, help="m of the cached model (default: L/2)")
    parser.add_argument("--rerank-top", type=int, default=20, help="candidates reranked per query (default: 20)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed searches first (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches; the median is reported (default: 3)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs in --output-dir")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda (default: cuda where there is one)",
    )
    args, overrides = parser.parse_with_overrides(argv)
    root, device = Path(args.output_dir), torch.device(args.device)

    full = measure_model(
        train(root / "join0", 0, overrides, args.reuse), device, args.rerank_top, args.k, args.warmup, args.repeats
    )
    m = args.join_layer if args.join_layer is not None else full["layers"] // 2
    late = measure_model(
        train(root / f"join{m}", m, overrides, args.reuse), device, args.rerank_top, args.k, args.warmup, args.repeats
    )
    for row in (full, late):
        emit(row, "cached_rerank", argv)
    key = f"rerank@{args.rerank_top}_rsum"
    emit(
        {
            "measurement": f"cached_rerank_m{m}_vs_m0",
            **{
                f"{d}_rerank_speedup": round(full[f"{d}_rerank_ms_per_query"] / late[f"{d}_rerank_ms_per_query"], 3)
                for d in ("t2i", "i2t")
            },
            "rsum_m0": full[key],
            f"rsum_m{m}": late[key],
            "rsum_ratio": round(late[key] / full[key], 4) if full[key] else None,
            "goal": ">= 1.8x faster reranking at m = L/2, rsum within 2% of m = 0",
        },
        "cached_rerank",
        argv,
    )
