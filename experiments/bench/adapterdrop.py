"""AdapterDrop speed on a BERT-base-sized single-stream backbone (random weights; timing only).

Three measurements, each with its baseline in the same run (the paper's numbers in brackets):
- training step with adapters dropped from the first `--drop` blocks vs none [26% faster];
- `--tasks` adapter sets in parallel with the first `--drop` blocks shared vs none [39% faster];
- inference of the adapter model vs the plain backbone [4-6% slower], and of the adapter model
  with AdapterDrop (no adapters in the first `--drop` blocks) vs the plain backbone.

A shared machine drifts (other jobs, clocks, caches), so the baseline and its candidates are
timed interleaved: after `--warmup` untimed runs of each, every repeat runs each configuration
once, the order reversed every other repeat (A B, B A, A B, ...), and each repeat gives one paired
ratio candidate / baseline of two runs that met the same load. One JSON object per measurement:
- `baseline_ms`, `candidate_ms`: the median time of each over the repeats;
- `ratio`: candidate_ms / baseline_ms; `speedup_pct`: 100 * (baseline_ms / candidate_ms - 1);
- `overhead_median_pct`: 100 * (median of the paired ratios - 1), > 0: the candidate is slower
  (the robust number: read this one);
- `overhead_iqr_pct`: [25th, 75th percentile] and `overhead_range_pct`: [min, max] of the same
  paired ratios (in % as above): the spread, so a difference inside it is noise;
- `pairs`: the number of paired repeats; `threads`: torch's CPU threads (`--threads`, 0: its default);
  `clock`: wall (default) or process (`--clock process`: this process's CPU time).

On a CPU shared with other jobs, use `--threads 1`: with more threads than free cores every
parallel op waits for a descheduled thread, so the model runs several times slower and each op an
adapter adds costs far more than its arithmetic. The README's Benchmarks section has the measured
overheads.
"""

from __future__ import annotations

import statistics

import torch
from transformers import BertConfig, BertModel

from experiments.bench.emit import emit
from experiments.bench.timing import interleaved
from retrerank.adapters.inject import add_adapter_set
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.cli import argument_parser
from retrerank.config import AdapterConfig


def build(device: torch.device, sets: int, feature_dim: int) -> SingleStreamBackbone:
    torch.manual_seed(0)
    backbone = SingleStreamBackbone(BertModel(BertConfig()), None, feature_dim)
    for i in range(sets):
        add_adapter_set(backbone, f"task{i}", AdapterConfig(kind="pfeiffer", reduction_factor=16))
    for name, p in backbone.named_parameters():  # frozen backbone and visual embedding, as in the paper
        p.requires_grad = ".adapters." in name
    return backbone.to(device)


def inputs(backbone, batch: int, words: int, regions: int, feature_dim: int, device):
    gen = torch.Generator().manual_seed(0)
    text = {
        "input_ids": torch.randint(1000, 2000, (batch, words), generator=gen),
        "attention_mask": torch.ones(batch, words, dtype=torch.bool),
    }
    xy = torch.rand(batch, regions, 2, generator=gen) * 0.5
    image = {
        "features": torch.rand(batch, regions, feature_dim, generator=gen),
        "boxes": torch.cat([xy, xy + 0.4], -1),
        "region_mask": torch.ones(batch, regions, dtype=torch.bool),
    }
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    with torch.no_grad():
        hidden, mask = backbone.embed_pair(move(text), move(image))
    return hidden, mask


def paired_stats(baseline: list[float], candidate: list[float]) -> dict:
    """Median, quartiles and range of the paired overheads 100 * (candidate / baseline - 1)."""
    overheads = sorted(100 * (c / b - 1) for b, c in zip(baseline, candidate))
    quartiles = statistics.quantiles(overheads, n=4, method="inclusive") if len(overheads) > 1 else overheads * 3
    return {
        "overhead_median_pct": round(statistics.median(overheads), 2),
        "overhead_iqr_pct": [round(quartiles[0], 2), round(quartiles[2], 2)],
        "overhead_range_pct": [round(overheads[0], 2), round(overheads[-1], 2)],
        "pairs": len(overheads),
    }


def report(name: str, baseline: list[float], candidate: list[float], paper: str, **extra) -> dict:
    """One measurement's row: the medians, their ratio and the spread of the paired ratios."""
    baseline_s, candidate_s = statistics.median(baseline), statistics.median(candidate)
    row = {
        "measurement": name,
        "baseline_ms": round(1000 * baseline_s, 2),
        "candidate_ms": round(1000 * candidate_s, 2),
        "ratio": round(candidate_s / baseline_s, 4),
        "speedup_pct": round(100 * (baseline_s / candidate_s - 1), 1),
        **paired_stats(baseline, candidate),
        "paper": paper,
        **extra,
    }
    return row


def main(argv: list[str]) -> list[dict]:
    parser = argument_parser("experiments.bench adapterdrop", __doc__)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch (default: 8)")
    parser.add_argument("--words", type=int, default=24, help="word tokens per pair (default: 24)")
    parser.add_argument("--regions", type=int, default=24, help="region tokens per pair (default: 24)")
    parser.add_argument("--drop", type=int, default=5, help="blocks without adapters, from the bottom (default: 5)")
    parser.add_argument("--tasks", type=int, default=8, help="adapter sets run in parallel (default: 8)")
    parser.add_argument("--repeats", type=int, default=5, help="paired repeats of the training and parallel timings")
    parser.add_argument("--inference-repeats", type=int, default=20, help="paired repeats of the inference timings")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each configuration first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall time | process: CPU time of this process (CPU only; use with --threads 1)",
    )
    parser.add_argument(
        "--only",
        choices=("train", "parallel", "inference"),
        nargs="+",
        default=["train", "parallel", "inference"],
        help="which measurements to run",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu | cuda (default: cuda where there is one)",
    )
    args = parser.parse_args(argv)
    if min(args.repeats, args.inference_repeats) < 1 or args.warmup < 0:
        parser.error("--repeats and --inference-repeats must be >= 1, --warmup >= 0")
    if args.clock == "process" and args.device != "cpu":
        parser.error("--clock process times CPU work only: use it with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    feature_dim = 2048
    backbone = build(device, args.tasks, feature_dim)
    hidden, mask = inputs(backbone, args.batch_size, args.words, args.regions, feature_dim, device)
    switch = backbone.adapter_switch
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)
    timed = lambda fns, repeats: interleaved(fns, device, args.warmup, repeats, args.clock)  # noqa: E731
    common = {
        "device": str(device),
        "clock": args.clock,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "tokens": args.words + args.regions,
        "layers": backbone.num_layers,
        "hidden": backbone.hidden_size,
    }
    rows = []

    def train_step(drop: int):
        def step():
            optimizer.zero_grad(set_to_none=True)
            with switch.use("task0", drop=drop):
                out = backbone.run_layers(hidden, mask)
            out.float().pow(2).mean().backward()
            optimizer.step()

        return step

    if "train" in args.only:
        times = timed({"drop0": train_step(0), "dropped": train_step(args.drop)}, args.repeats)
        rows.append(
            report(f"train_step_drop{args.drop}_vs_drop0", times["drop0"], times["dropped"], "26% faster", **common)
        )
        emit(rows[-1], "adapterdrop", argv)

    sets = [f"task{i}" for i in range(args.tasks)]
    with torch.no_grad():
        if "parallel" in args.only:
            parallel = lambda shared: lambda: backbone.encode_parallel(hidden, mask, sets, shared)  # noqa: E731
            times = timed({"shared0": parallel(0), "shared": parallel(args.drop)}, args.repeats)
            rows.append(
                report(
                    f"parallel_{args.tasks}_tasks_shared{args.drop}_vs_shared0",
                    times["shared0"],
                    times["shared"],
                    "39% faster",
                    **common,
                )
            )
            emit(rows[-1], "adapterdrop", argv)

        def infer(active, drop: int = 0):
            def run():
                with switch.use(active, drop=drop):
                    backbone.run_layers(hidden, mask)

            return run

        if "inference" in args.only:
            times = timed(
                {"plain": infer(None), "adapters": infer("task0"), "dropped": infer("task0", args.drop)},
                args.inference_repeats,
            )
            rows.append(
                emit(
                    report("inference_adapters_vs_plain", times["plain"], times["adapters"], "4-6% slower", **common),
                    "adapterdrop",
                    argv,
                )
            )
            rows.append(
                emit(
                    report(
                        f"inference_adapters_drop{args.drop}_vs_plain",
                        times["plain"],
                        times["dropped"],
                        "(not measured)",
                        **common,
                    ),
                    "adapterdrop",
                    argv,
                )
            )
    return rows
