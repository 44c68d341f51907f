"""`bench peers` machine_peak: how much of this machine's matmul throughput reranking and training reach.

- `peak_gflops`: dense fp32 matmul throughput at the model's own GEMM shapes, with the same threads.
  The shapes are recorded from one reranking batch and one training step (every mm / addmm / bmm the
  model runs, `GemmRecorder`), then each distinct shape is timed alone in the model's memory layout, and the peak is the
  occurrence-weighted throughput over them (the speed the model would reach if it were nothing but
  its matmuls). Two libraries do each shape: torch's (`peak_gflops_torch`: MKL in the CPU wheels)
  and numpy's BLAS (`peak_gflops_numpy`: OpenBLAS in the PyPI wheels); `peak_gflops` is the faster,
  since a tool could use either.
- `rerank_fraction`: FLOP/s of the reranking step (the cross-encoder scoring the candidates of the
  test captions from cached states, as `SearchResult.rerank_seconds` times it) / peak_gflops.
- `train_fraction`: FLOP/s of one training step (forward and backward of the joint objective, on one
  training batch; the optimizer's elementwise update is not included) / peak_gflops.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls and attention; elementwise
work is not counted, as in the usual model-FLOPs utilisation).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from retrerank.torch_utils import inference

aten = torch.ops.aten


class GemmRecorder(TorchDispatchMode):
    """Counts the (batch, M, K, N, B transposed) of every fp32 matmul run inside it: the layout too, since a
    linear layer multiplies by its weight transposed, and a library may be faster on one layout."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = getattr(func, "overloadpacket", None)
        if packet in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
            a, b = (args[1], args[2]) if packet in (aten.addmm, aten.baddbmm) else (args[0], args[1])
            if a.dtype == torch.float32:
                batch = a.shape[0] if a.dim() == 3 else 1
                transposed = b.stride(-2) == 1 and b.shape[-2] > 1
                self.shapes[(batch, a.shape[-2], a.shape[-1], b.shape[-1], transposed)] += 1
        return func(*args, **kwargs)


def gemm_seconds(shape: tuple, library: str, repeats: int, device: torch.device) -> float:
    """Best time of one matmul of `shape` (batch, M, K, N, B transposed) over `repeats` runs."""
    batch, m, k, n, transposed = shape
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(batch, m, k, generator=generator).squeeze(0)
    b = torch.randn(batch, n, k, generator=generator).transpose(-1, -2) if transposed else None
    b = torch.randn(batch, k, n, generator=generator) if b is None else b
    b = b.squeeze(0)
    if library == "numpy":
        a, b = a.numpy(), b.numpy()
        run = lambda: np.matmul(a, b)  # noqa: E731
    else:
        a, b = a.to(device), b.to(device)
        run = lambda: torch.matmul(a, b)  # noqa: E731
    return min(seconds(run, device) for _ in range(repeats + 1))  # the first run warms up


def peak(shapes: Counter, repeats: int, device: torch.device) -> dict[str, float]:
    """Occurrence-weighted GFLOP/s over the shapes, per library (numpy's on the CPU only)."""
    flops = sum(2 * b * m * k * n * count for (b, m, k, n, _), count in shapes.items())
    out = {}
    for library in ("torch", "numpy") if device.type == "cpu" else ("torch",):
        total = sum(gemm_seconds(shape, library, repeats, device) * count for shape, count in shapes.items())
        out[library] = flops / total / 1e9
    return out


def seconds(fn, device: torch.device) -> float:
    """Wall time of one fn(), the device's queued work included."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def counted(fn) -> tuple[float, Counter]:
    """(FLOPs, GEMM shapes) of one run of fn."""
    recorder = GemmRecorder()
    with FlopCounterMode(display=False) as counter, recorder:
        fn()
    return float(counter.get_total_flops()), recorder.shapes


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    return statistics.median(seconds(fn, device) for _ in range(repeats))


def rerank_step(pipeline, texts: list[str], k: int):
    """fn() that runs the reranking step of text queries against the indexed images (the states
    are ready: only the cross-encoder's scoring of the k candidates per query runs)."""
    embeddings, states = pipeline._encode(texts, "texts")
    _, indices = pipeline._image_index.search(embeddings, k, chunk_size=pipeline.chunk_size)
    query_rows = torch.arange(len(texts)).repeat_interleave(k).tolist()
    candidate_rows = indices.cpu().reshape(-1).tolist()
    if states is None:
        raise ValueError("machine_peak times the late-interaction reranking step (model.join_layer > 0)")
    images = pipeline._corpus_states("image")
    return lambda: pipeline._score_states(states, query_rows, images, candidate_rows)


def training_step(system, batch):
    objectives = system.objectives_for_step(0)

    def step():
        system.zero_grad(set_to_none=True)
        system.losses(batch, objectives)["loss"].backward()

    return step


def measure(pipeline, split, system, batch, k: int, repeats: int) -> dict:
    texts, device = split.texts, next(system.parameters()).device
    pipeline.index_images(split.images)
    rerank = rerank_step(pipeline, texts, k)
    with inference(pipeline.cross_encoder):
        rerank_flops, rerank_shapes = counted(rerank)
        rerank_s = median_seconds(rerank, repeats, device)
    system.train()
    train = training_step(system, batch)
    with torch.enable_grad():
        train_flops, train_shapes = counted(train)
        train_s = median_seconds(train, repeats, device)
    system.eval()
    gflops = peak(rerank_shapes + train_shapes, repeats, device)
    best = max(gflops.values())
    rerank_rate, train_rate = rerank_flops / rerank_s / 1e9, train_flops / train_s / 1e9
    return {
        "peak_gflops": round(best, 2),
        "peak_gflops_torch": round(gflops["torch"], 2),
        "peak_gflops_numpy": round(gflops["numpy"], 2) if "numpy" in gflops else None,
        "rerank_gflops": round(rerank_rate, 2),
        "rerank_fraction": round(rerank_rate / best, 4),
        "rerank_seconds": round(rerank_s, 4),
        "rerank_gflop": round(rerank_flops / 1e9, 3),
        "rerank_pairs": len(texts) * k,
        "train_gflops": round(train_rate, 2),
        "train_fraction": round(train_rate / best, 4),
        "train_step_seconds": round(train_s, 4),
        "train_gflop": round(train_flops / 1e9, 3),
        "train_batch": len(batch["image_index"]),
        "gemm_shapes": len(rerank_shapes + train_shapes),
        "repeats": repeats,
    }
