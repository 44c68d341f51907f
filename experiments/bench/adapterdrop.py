"""AdapterDrop speed on a BERT-base-sized single-stream backbone (random weights; timing only).

Three measurements, each with its baseline in the same run (the paper's numbers in brackets):
- training step with adapters dropped from the first 5 blocks vs none [26% faster];
- 8 adapter sets in parallel with the first 5 blocks shared vs none [39% faster];
- inference of the adapter model vs the plain backbone [4-6% slower].
"""
from __future__ import annotations

import argparse
import json

import torch
from transformers import BertConfig, BertModel

from retrerank.adapters.inject import add_adapter_set
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import AdapterConfig
from retrerank.timing import measure


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
    text = {"input_ids": torch.randint(1000, 2000, (batch, words), generator=gen),
            "attention_mask": torch.ones(batch, words, dtype=torch.bool)}
    xy = torch.rand(batch, regions, 2, generator=gen) * 0.5
    image = {"features": torch.rand(batch, regions, feature_dim, generator=gen),
             "boxes": torch.cat([xy, xy + 0.4], -1), "region_mask": torch.ones(batch, regions, dtype=torch.bool)}
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    with torch.no_grad():
        hidden, mask = backbone.embed_pair(move(text), move(image))
    return hidden, mask


def report(name: str, baseline_s: float, candidate_s: float, paper: str, **extra) -> None:
    print(json.dumps({"measurement": name, "baseline_ms": round(1000 * baseline_s, 2),
                      "candidate_ms": round(1000 * candidate_s, 2), "ratio": round(candidate_s / baseline_s, 4),
                      "speedup_pct": round(100 * (baseline_s / candidate_s - 1), 1), "paper": paper, **extra}), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench adapterdrop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--words", type=int, default=24)
    parser.add_argument("--regions", type=int, default=24)
    parser.add_argument("--drop", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    feature_dim = 2048
    backbone = build(device, args.tasks, feature_dim)
    hidden, mask = inputs(backbone, args.batch_size, args.words, args.regions, feature_dim, device)
    switch = backbone.adapter_switch
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)
    time = lambda fn: measure(fn, device, args.warmup, args.repeats)  # noqa: E731
    common = {"device": str(device), "batch_size": args.batch_size, "tokens": args.words + args.regions,
              "layers": backbone.num_layers, "hidden": backbone.hidden_size}

    def train_step(drop: int):
        def step():
            optimizer.zero_grad(set_to_none=True)
            with switch.use("task0", drop=drop):
                out = backbone.run_layers(hidden, mask)
            out.float().pow(2).mean().backward()
            optimizer.step()
        return step

    report(f"train_step_drop{args.drop}_vs_drop0", time(train_step(0)), time(train_step(args.drop)), "26% faster",
           **common)

    sets = [f"task{i}" for i in range(args.tasks)]
    with torch.no_grad():
        parallel = lambda shared: (lambda: backbone.encode_parallel(hidden, mask, sets, shared))  # noqa: E731
        report(f"parallel_{args.tasks}_tasks_shared{args.drop}_vs_shared0", time(parallel(0)),
               time(parallel(args.drop)), "39% faster", **common)

        def infer(active):
            def run():
                with switch.use(active, drop=0):
                    backbone.run_layers(hidden, mask)
            return run
        report("inference_adapters_vs_plain", time(infer(None)), time(infer("task0")), "4-6% slower", **common)
