"""Retrieval examples to look at: a few text queries, the bi-encoder's top 5 beside the reranked top 5.

After testing, `experiments.run` draws `examples.png` in the run folder (and logs it to W&B) from
the test split through the one pipeline (`RetrieveRerank.text_to_image`, the search API's path).
Each row is one caption: its bi-encoder top 5 on the left, its reranked top 5 on the right, each
image with its score, a relevant image framed in green and any other in red. Images are drawn from
their pixels (the synthetic scenes' rendered pictures, or a real dataset's image folder); region-
only records get a grey tile with their id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrerank.data.records import RetrievalSplit
from retrerank.distributed import local
from retrerank.plots import save_png


@dataclass
class Example:
    text: str
    bi: list[tuple[int, float]]  # (image row, score), best first
    reranked: list[tuple[int, float]]
    relevant: set[int]


def pick_queries(split: RetrievalSplit, n: int) -> list[int]:
    """n caption rows spread evenly over the split (deterministic)."""
    count = len(split.captions)
    return sorted({int(i) for i in np.linspace(0, count - 1, num=min(n, count))})


def find_examples(pipeline, split: RetrievalSplit, n: int = 4, k: int = 5, rerank_top: int = 20) -> list[Example]:
    """The bi-encoder's and the reranked top k of n captions of `split`, both from the pipeline."""
    rows = pick_queries(split, n)
    texts = [split.texts[r] for r in rows]
    k = min(k, len(split.images))
    pipeline.index_images(split.images)
    bi = pipeline.text_to_image(texts, k)
    reranked = pipeline.text_to_image(texts, k, rerank_top=rerank_top)
    out = []
    for q, row in enumerate(rows):
        out.append(
            Example(
                texts[q],
                list(zip(bi.indices[q].tolist(), bi.scores[q].tolist())),
                list(zip(reranked.indices[q].tolist(), reranked.scores[q].tolist())),
                {int(i) for i in np.atleast_1d(split.caption_relevant[row])},
            )
        )
    return out


def plot_examples(examples: list[Example], split: RetrievalSplit, path: str | Path, method: str = "rerank@20") -> Path:
    """One row per example: bi-encoder top k | reranked top k, scores under the images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = max(len(e.bi) for e in examples)
    figure = Figure(figsize=(2.0 * k * 2 + 0.5, 2.4 * len(examples)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(examples), 2 * k, squeeze=False)
    for r, example in enumerate(examples):
        for side, ranking in enumerate((example.bi, example.reranked)):
            for c, (row, score) in enumerate(ranking):
                axes = grid[r][side * k + c]
                image = split.images[row]
                if image.pixels is not None:
                    axes.imshow(image.pixels)
                else:
                    axes.imshow(np.full((8, 8, 3), 200, dtype=np.uint8))
                    axes.text(4, 4, image.image_id, ha="center", va="center", fontsize=6)
                hit = row in example.relevant
                for spine in axes.spines.values():
                    spine.set(color="green" if hit else "red", linewidth=3 if hit else 1)
                axes.set_xticks([]), axes.set_yticks([])
                axes.set_xlabel(f"{score:.2f}", fontsize=8)
                if c == 0:
                    axes.set_title("bi-encoder" if side == 0 else method, fontsize=8, loc="left")
        grid[r][0].set_ylabel(example.text, fontsize=8, rotation=0, ha="right", va="center", wrap=True)
    return save_png(figure, path, dpi=80)


def write_examples(system, cfg, split: RetrievalSplit | None, path: Path, logger=None) -> Path | None:
    """examples.png of a tested system (cfg: the run's Config) on `split`; None without a
    cross-encoder or a reranking method to show."""
    from retrerank.retrieval.pipeline import RetrieveRerank

    if split is None or cfg.objective.mode == "bi" or not cfg.eval.rerank_ks or system.cross_encoder is None:
        return None
    depth = max(cfg.eval.rerank_ks)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    with local():  # only the main rank draws it: under DDP the other ranks never join a gather
        examples = find_examples(pipeline, split, rerank_top=depth)
    png = plot_examples(examples, split, path, f"rerank@{depth}")
    if logger is not None and logger.__class__.__name__ == "WandbLogger":
        logger.log_image(key="test/examples", images=[str(png)])
    return png
