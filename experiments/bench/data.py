"""Training-data throughput from a region store: images/s served by the DataLoader and peak memory.

Builds (or reuses, when its shape matches) a generated store of random region features and 5
random captions per image, then serves shuffled training batches exactly as training does:
DataLoader(CaptionDataset(split), collate_fn=CaptionCollate(tokenize), persistent workers), with
the embedded MiniLM's fast tokenizer. Prints one JSON object. Goal: >= 2000 images/s with 2
workers and < 2 GB peak memory (main process plus workers), whatever the store size.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from experiments.bench.emit import emit
from retrerank.cli import argument_parser, run_main
from retrerank.data.datamodule import CaptionCollate, CaptionDataset
from retrerank.data.errors import DataError
from retrerank.data.records import CaptionRecord, RetrievalSplit
from retrerank.data.stores.region_store import RegionStore, RegionStoreWriter, partial_path
from retrerank.io import atomic_file

GOAL = ">= 2000 images/s, < 2 GB"
WORDS = (
    "a an the man woman dog cat red blue green small large sits stands runs on in near under beside "
    "table street park bench car tree water ball holding wearing white black young old two three"
).split()


def build_store(path: Path, images: int, regions: int, dim: int, dtype: str, seed: int = 0) -> bool:
    """Write the generated store unless one of the same shape is there; True if it was (re)built."""
    try:
        store = RegionStore(path)
        # a store from before the checksums is rebuilt: the benchmark measures what prepare writes now
        if (
            (len(store), store.feature_dim, str(store.dtype)) == (images, dim, dtype)
            and (np.diff(store.offsets) == regions).all()
            and store.checksummed
        ):
            return False
    except DataError:
        pass
    rng = np.random.default_rng(seed)
    block = 256  # images generated at a time: memory stays small whatever the store size
    try:
        writer = RegionStoreWriter(path, dim, dtype, batch_images=block)
    except DataError:  # an unusable .partial of an earlier run: generated data, simply start over
        partial_path(path).unlink()
        writer = RegionStoreWriter(path, dim, dtype, batch_images=block)
    with writer:
        for start in range(0, images, block):
            n = min(block, images - start)
            if writer.has(f"img{start + n - 1:08d}"):  # written by an interrupted run
                continue
            feats = rng.standard_normal((n, regions, dim), dtype=np.float32).astype(dtype)
            xy = rng.random((n, regions, 2), dtype=np.float32) * 0.5
            boxes = np.concatenate([xy, xy + 0.5], axis=-1)
            for i in range(n):
                image_id = f"img{start + i:08d}"
                if not writer.has(image_id):
                    writer.add(image_id, feats[i], boxes[i], 640, 480, boxes_normalised=True)
    return True


def captions_for(store: RegionStore, path: Path, per_image: int, seed: int = 0) -> list[CaptionRecord]:
    """`per_image` random captions for every image, kept in a jsonl file next to the store."""
    ids = store.ids
    if path.is_file():
        captions = [CaptionRecord(**json.loads(line)) for line in path.read_text().splitlines()]
        if len(captions) == per_image * len(ids) and {c.image_id for c in captions} == set(ids):
            return captions
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    captions = []
    for image_id in ids:
        for k in range(per_image):
            text = " ".join(words[rng.integers(0, len(words), rng.integers(6, 16))])
            captions.append(CaptionRecord(f"{image_id}-{k}", image_id, text))
    with atomic_file(path, text=True) as f:
        for c in captions:
            f.write(json.dumps({"caption_id": c.caption_id, "image_id": c.image_id, "text": c.text}) + "\n")
    return captions


class Tokenize:
    """The backbone's tokenisation (padding, truncation to 40 tokens) with a fast tokenizer."""

    def __init__(self, max_len: int = 40) -> None:
        from transformers import AutoTokenizer

        from retrerank.backbones.single_stream import resolve_backbone_path
        from retrerank.config import EMBEDDED_BACKBONE

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_backbone_path(EMBEDDED_BACKBONE))
        self.max_len = max_len

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].bool()}


def evict_page_cache(path: Path) -> None:
    """Drop the file's pages from the OS page cache (no root needed for clean pages), so that the
    loader reads the store from the disk as a first epoch over a large dataset does."""
    if not hasattr(os, "posix_fadvise"):
        raise SystemExit("--cold needs os.posix_fadvise (Linux)")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (VmHWM) from /proc, None where /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str]) -> dict:
    parser = argument_parser("experiments.bench data", __doc__)
    parser.add_argument("--images", type=int, default=10000, help="images in the generated store (default: 10000)")
    parser.add_argument("--regions", type=int, default=36, help="regions per image (default: 36)")
    parser.add_argument("--dim", type=int, default=2048, help="region feature width (default: 2048)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="the store's feature type")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--dir", default="runs/bench_data", help="where the generated store is kept")
    parser.add_argument("--batch-size", type=int, default=128, help="captions per training batch (default: 128)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--batches", type=int, default=60, help="timed batches (default: 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (default: 5)")
    parser.add_argument(
        "--cold", action="store_true", help="evict the store from the page cache first: reads come from the disk"
    )
    args = parser.parse_args(argv)
    small = [
        f"--{name.replace('_', '-')}"
        for name, low in (("images", 1), ("regions", 1), ("dim", 1), ("captions", 1), ("batch_size", 1))
        + (("batches", 1), ("workers", 0), ("warmup", 0))
        if getattr(args, name) < low
    ]
    if small:  # before the store is built: a bad option writes nothing
        parser.error(f"{', '.join(small)} too small: counts must be >= 1 (--workers and --warmup >= 0)")
    if args.batch_size > args.images * args.captions:
        parser.error(f"--batch-size {args.batch_size} is more than the {args.images * args.captions} captions")
    # the workers fork after the tokenizer is loaded; its own thread pool would only compete with them
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    folder = Path(args.dir)
    path = folder / f"regions_{args.images}x{args.regions}x{args.dim}_{args.dtype}.h5"
    start = time.perf_counter()
    built = build_store(path, args.images, args.regions, args.dim, args.dtype)
    store = RegionStore(path)
    split = RetrievalSplit(
        "train", store.images(), captions_for(store, path.with_suffix(".captions.jsonl"), args.captions)
    )
    prepare_s = time.perf_counter() - start
    if args.cold:
        evict_page_cache(path)

    loader = DataLoader(
        CaptionDataset(split),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=CaptionCollate(Tokenize()),
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    # the loader and its current epoch's iterator; cleared below to shut the workers down
    epoch = {"loader": loader, "batches": iter(loader)}
    del loader

    def next_batch() -> dict:
        try:
            return next(epoch["batches"])
        except StopIteration:  # an epoch is over: the persistent workers go on with the next one
            epoch["batches"] = iter(epoch["loader"])
            return next(epoch["batches"])

    for _ in range(args.warmup):
        next_batch()
    served, start = 0, time.perf_counter()
    for _ in range(args.batches):
        batch = next_batch()
        served += len(batch["image_index"])
    seconds = time.perf_counter() - start
    dtype = str(batch["image"]["features"].dtype).removeprefix("torch.")

    workers = [w.pid for w in getattr(epoch["batches"], "_workers", [])]
    main_mb = peak_rss_mb(os.getpid())
    worker_mb = [peak_rss_mb(pid) for pid in workers]
    epoch.clear()  # shuts the workers down
    if main_mb is None or None in worker_mb:  # no /proc: getrusage (kB on Linux), the largest child for each
        main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        worker_mb = [child_mb] * len(workers)
    peak = main_mb + sum(worker_mb)
    rate = served / seconds
    result = {
        "benchmark": "data",
        "images_per_s": round(rate, 1),
        "batch_size": args.batch_size,
        "batches": args.batches,
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_mb_main": round(main_mb, 1),
        "peak_rss_mb_workers": [round(m, 1) for m in worker_mb],
        "store": str(path),
        "store_bytes": path.stat().st_size,
        "store_built": built,
        "prepare_s": round(prepare_s, 2),
        "images": args.images,
        "regions": args.regions,
        "dim": args.dim,
        "store_dtype": args.dtype,
        "batch_features_dtype": dtype,
        "captions": len(split.captions),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "page_cache": "evicted" if args.cold else "as found",
        "goal": GOAL,
        "meets_goal": bool(rate >= 2000 and peak < 2048),
    }
    return emit(result, "data", argv)


if __name__ == "__main__":
    run_main(main)
