"""Scores on the compositional benchmarks (retrerank.data.compositional), from pair scores.

Each item's (caption, image) pairs are scored directly by the pipeline's own pair scoring
(retrerank.retrieval.twins.pair_scores: embeddings once per text and image, the cross-encoder on the
listed pairs only), never read from a top-k list. Scorers as for the twin scores: `bi` (bi-encoder
cosine), `cross` (the cross-encoder's logit alone) and `rerank` (the reranking score of eval.scoring:
the logit, plus bi_weight x cosine with cross+bi). Ties count as wrong everywhere.

- Winoground (two images, two captions): text, image and group score in percent (`winoground`, as for
  the twins), overall and per category;
- SugarCrepe, ARO (one image, a true and a false caption): accuracy in percent, the share of items whose
  true caption scores above the false one; per category, `acc_micro` over every item and `acc_macro`, the
  mean over the benchmark's reported categories (SugarCrepe's seven files; ARO's as ARO reports them).

Metric names (`compositional/<benchmark>/...`): `<scorer>/<score>` and `<scorer>/<category>/<score>`
(score: text, image, group; or acc_micro, acc_macro and, per category, acc); `items` and
`items/<category>` count the items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from retrerank.data.compositional import PAIR_OF_PAIRS, Benchmark
from retrerank.retrieval.methods import Method
from retrerank.retrieval.twins import SCORERS, pair_scores, winoground

PREFIX = "compositional"
WINOGROUND_SCORES = ("text", "image", "group")


def scorers_for(methods: Sequence[str]) -> list[str]:
    """The scorers a run's test methods call for: bi always; cross and rerank with any reranking method."""
    return ["bi"] + (["cross", "rerank"] if any(Method.parse(str(m)).kind != "bi" for m in methods) else [])


def item_scores(pipeline, benchmark: Benchmark, scorers: Sequence[str] = SCORERS) -> dict[str, Tensor]:
    """{scorer: [N, C, I]}: the score of item n's caption c with its image i (N items; C x I is 2 x 2 for
    Winoground, 2 x 1 otherwise, caption 0 the true one). Each distinct (caption, image) pair is scored once."""
    items = benchmark.items
    n_captions, n_images = len(items[0].captions), len(items[0].images)
    wanted = [(item.captions[c], item.images[i]) for item in items for c in range(n_captions) for i in range(n_images)]
    distinct = list(dict.fromkeys(wanted))
    at = {pair: n for n, pair in enumerate(distinct)}
    scored = pair_scores(
        pipeline, benchmark.texts, benchmark.images, [t for t, _ in distinct], [i for _, i in distinct], scorers
    )
    index = torch.tensor([at[pair] for pair in wanted], dtype=torch.long)
    return {name: values[index].view(len(items), n_captions, n_images) for name, values in scored.items()}


def right_answers(benchmark: Benchmark, scores: Tensor) -> dict[str, Tensor]:
    """{score name: [N] bool}: Winoground's text / image / group, or `acc` (true caption above the false one)."""
    if benchmark.kind == PAIR_OF_PAIRS:
        return winoground(scores)
    return {"acc": scores[:, 0, 0] > scores[:, 1, 0]}


def benchmark_metrics(benchmark: Benchmark, scores: dict[str, Tensor]) -> dict[str, float]:
    """The metrics (module doc) of a benchmark from its item scores ({scorer: [N, C, I]}, `item_scores`)."""
    name = f"{PREFIX}/{benchmark.name}"
    masks = {c: torch.tensor([c in item.categories for item in benchmark.items]) for c in benchmark.categories}
    masks = {c: mask for c, mask in masks.items() if mask.any()}
    out = {f"{name}/items": float(len(benchmark.items))}
    out |= {f"{name}/items/{c}": float(mask.sum()) for c, mask in masks.items()}
    for scorer, values in scores.items():
        for score, right in right_answers(benchmark, values).items():
            percent = {c: 100 * float(right[mask].float().mean()) for c, mask in masks.items()}
            overall = 100 * float(right.float().mean())
            if benchmark.kind == PAIR_OF_PAIRS:
                out[f"{name}/{scorer}/{score}"] = overall
            else:
                out[f"{name}/{scorer}/{score}_micro"] = overall
                macro = [percent[c] for c in benchmark.macro if c in percent]
                if macro:
                    out[f"{name}/{scorer}/{score}_macro"] = sum(macro) / len(macro)
            out |= {f"{name}/{scorer}/{c}/{score}": value for c, value in percent.items()}
    return out


def compositional_metrics(pipeline, benchmark: Benchmark, scorers: Sequence[str] = SCORERS) -> dict[str, float]:
    """A benchmark's metrics (module doc) under the pipeline's models, for `scorers` (cross and rerank need
    its cross-encoder)."""
    return benchmark_metrics(benchmark, item_scores(pipeline, benchmark, scorers))


def format_compositional_table(metrics: dict[str, float]) -> str:
    """The benchmark's metrics as text, under a line saying what they are: one row per category (after the
    overall rows), one column per scorer (and Winoground score); "" where `metrics` holds none."""
    names = sorted({key.split("/")[1] for key in metrics if key.startswith(f"{PREFIX}/") and key.endswith("/items")})
    if not names:
        return ""
    base = f"{PREFIX}/{names[0]}"
    n = int(metrics[f"{base}/items"])
    scorers = [s for s in SCORERS if any(key.startswith(f"{base}/{s}/") for key in metrics)]
    categories = [key.split("/", 3)[3] for key in metrics if key.startswith(f"{base}/items/")]
    pair_of_pairs = any(key.startswith(f"{base}/") and key.endswith("/group") for key in metrics)
    columns = [(s, score) for s in scorers for score in (WINOGROUND_SCORES if pair_of_pairs else ("acc",))]

    def cells(part: str, suffix: str = "") -> list[str]:
        values = [metrics.get(f"{base}/{s}/{part}{score}{suffix}") for s, score in columns]
        return ["-" if v is None else f"{v:.1f}" for v in values]

    if pair_of_pairs:
        title = f"{names[0]}: {n} items, Winoground scores (%) by scorer: text, image, group (ties count as wrong)"
        header = ["category", "items"] + [f"{s} {score}" for s, score in columns]
        rows = [["all", str(n)] + cells("")]
    else:
        title = (
            f"{names[0]}: {n} items, accuracy (%): the true caption scores above the false one (ties count as wrong)"
        )
        header = ["category", "items"] + scorers
        macro = len(categories)  # the reported categories are the macro accuracy's (retrerank.data.compositional)
        rows = [
            ["micro (all items)", str(n)] + cells("", "_micro"),
            [f"macro ({macro} {'category' if macro == 1 else 'categories'})", ""] + cells("", "_macro"),
        ]
    rows += [[c, str(int(metrics[f"{base}/items/{c}"]))] + cells(f"{c}/") for c in categories]
    widths = [max(len(r[i]) for r in [header] + rows) + 2 for i in range(len(header))]
    lines = [
        "".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header] + rows
    ]
    return "\n".join([title] + lines)
