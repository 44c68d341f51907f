"""Winoground-style scores on twin images: can a scorer tell a scene from its near-duplicate?

A twin pair is two images of a split that the dataset knows to be near-duplicates (ImageRecord.near:
the synthetic twins, which swap two objects' colours, cells or sizes), a caption written for the first
that is false of the second, and a caption written for the second that is false of the first (exact
relevance, `RetrievalSplit.caption_relevant`: on the synthetic data the generator's `holds` decides).
Every such caption pair of an image pair is one twin pair (captions in the same language).

Over the pairs, with s(c, i) a scorer's score of caption c and image i (Thrush et al. 2022, Winoground):
- text score: for each image, its own caption scores above the other one;
- image score: for each caption, its own image scores above the other one;
- group score: both. Ties count as wrong. Chance is 25 / 25 / 16.7 %.

The four scores of a pair are computed directly (`pair_scores`), never read from a top-k list, so
every pair counts whatever the retrieval around it. Scorers: `bi` (bi-encoder cosine), `cross` (the
cross-encoder's logit alone) and `rerank` (the reranking score of eval.scoring: the logit, plus
bi_weight x cosine with cross+bi; what rerank@k and cross_all rank by).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from retrerank.data.records import ImageRecord, RetrievalSplit
from retrerank.retrieval.methods import Method
from retrerank.retrieval.scoring import image_major

if TYPE_CHECKING:
    from retrerank.config import DataConfig, SyntheticConfig
    from retrerank.data.synthetic.scenes import Scene
    from retrerank.retrieval.pipeline import RetrieveRerank

SWAP_KINDS = ("colour", "cell", "size")  # what a synthetic twin swaps between two of its objects
SCORERS = ("bi", "cross", "rerank")


class TwinPair(NamedTuple):
    """Rows of a split: images (A, B) and captions (true of A and false of B, true of B and false of A)."""

    images: tuple[int, int]
    captions: tuple[int, int]
    kind: str | None = None  # what B swapped of A (SWAP_KINDS); None where the dataset does not say


def swapped(scene: Scene, twin: Scene) -> str:
    """Which attribute a synthetic twin swapped between two objects: colour, cell or size ("other" if none)."""
    for field in SWAP_KINDS:
        mine, theirs = [getattr(o, field) for o in scene], [getattr(o, field) for o in twin]
        if mine != theirs and sorted(mine) == sorted(theirs):
            return field
    return "other"


def synthetic_swap_kinds(cfg: SyntheticConfig, split_name: str) -> dict[str, str]:
    """{image id: what its twin swapped} for the images of a generated synthetic split that have a twin.
    Plans the split's scenes again (cheap: no pictures or features), as the generator does."""
    from retrerank.data.synthetic.generate import parse_combos, plan_split, twin_rows

    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "novel": cfg.n_test}
    if split_name not in sizes:
        raise ValueError(f"no synthetic split is named {split_name!r}; expected one of {list(sizes)}")
    held_out = parse_combos(cfg)
    if split_name == "novel" and not held_out:
        return {}  # the generator makes no novel split then
    scenes, _ = plan_split(cfg, split_name, sizes[split_name], held_out)
    return {f"syn-{split_name}-{i:06d}": swapped(scenes[i][0], scenes[j][0]) for i, j in twin_rows(scenes).items()}


def twin_pairs(split: RetrievalSplit, kinds: Mapping[str, str] | None = None) -> list[TwinPair]:
    """The twin pairs of a split (module docstring): every image pair that ImageRecord.near links (once),
    every caption written for A and false of B with every caption written for B and false of A, in the
    same language. kinds: {image id: swap kind} (`synthetic_swap_kinds`); pairs of other images get None."""
    kinds = kinds or {}
    row = {image.image_id: i for i, image in enumerate(split.images)}
    own = [[] for _ in split.images]  # the captions written for each image
    for j, i in enumerate(split.caption_image_index.tolist()):
        own[i].append(j)

    def telling(a: int, b: int) -> list[int]:  # captions written for a that are false of b
        return [j for j in own[a] if b not in split.caption_relevant[j]]

    pairs = []
    for a, image in enumerate(split.images):
        for b in sorted({row[other] for other in image.near if other in row and row[other] > a}):
            kind = kinds.get(image.image_id)
            for ca in telling(a, b):
                for cb in telling(b, a):
                    if split.captions[ca].lang == split.captions[cb].lang:
                        pairs.append(TwinPair((a, b), (ca, cb), kind))
    return pairs


def split_twins(split: RetrievalSplit, data: DataConfig) -> list[TwinPair]:
    """The twin pairs of a split of dataset `data` (retrerank.config.DataConfig), with their swap kind;
    [] for datasets that do not know twins (every real one)."""
    if data.dataset != "synthetic" or not any(image.near for image in split.images):
        return []
    return twin_pairs(split, synthetic_swap_kinds(data.synthetic, split.name))


def pair_scores(
    pipeline: RetrieveRerank,
    texts: Sequence[str],
    images: Sequence[ImageRecord],
    text_rows: Sequence[int],
    image_rows: Sequence[int],
    scorers: Sequence[str] = SCORERS,
) -> dict[str, Tensor]:
    """{scorer: [P] scores (CPU float32) of the pairs (texts[text_rows[p]], images[image_rows[p]])}, for
    the scorers asked (SCORERS); cross and rerank need the pipeline's cross-encoder. Each text and image is
    encoded once, and only the listed pairs are scored by the cross-encoder."""
    unknown = set(scorers) - set(SCORERS)
    if unknown:
        raise ValueError(f"unknown scorers {sorted(unknown)}; expected some of {list(SCORERS)}")
    text_rows, image_rows = list(text_rows), list(image_rows)
    if len(text_rows) != len(image_rows):
        raise ValueError(f"{len(text_rows)} text rows for {len(image_rows)} image rows: one of each per pair")
    out: dict[str, Tensor] = {}
    cosine = None
    if "bi" in scorers or ("rerank" in scorers and pipeline.scoring == "cross+bi"):
        t, i = pipeline.embed_texts(texts).cpu(), pipeline.embed_images(images).cpu()
        cosine = (t[text_rows] * i[image_rows]).sum(1).float()
        if "bi" in scorers:
            out["bi"] = cosine
    if "cross" in scorers or "rerank" in scorers:
        logits = _logits(pipeline, list(texts), list(images), text_rows, image_rows)
        if "cross" in scorers:
            out["cross"] = logits
        if "rerank" in scorers:
            out["rerank"] = logits + pipeline.bi_weight * cosine if pipeline.scoring == "cross+bi" else logits
    return {name: out[name] for name in scorers}


def _logits(pipeline, texts: list[str], images: list[ImageRecord], text_rows: list[int], image_rows: list[int]):
    """Cross-encoder logits of the listed pairs, by the pipeline's own pair-scoring paths."""
    pipeline._require_cross()
    if not text_rows:
        return torch.empty(0)
    if pipeline._late():  # each text's and image's lower blocks once, then blocks [m, L) per pair
        text_states, image_states = pipeline._cross_states(texts, "texts"), pipeline._cross_states(images, "images")
        return pipeline._score_states(text_states, text_rows, image_states, image_rows, "twin pairs")
    return image_major(  # an image is collated once per batch of pairs
        image_rows,
        lambda order: pipeline._score_pairs(
            lambda p: (texts[text_rows[order[p]]], images[image_rows[order[p]]]), len(order), "twin pairs"
        ),
    )


def winoground(scores: Tensor) -> dict[str, Tensor]:
    """{"text", "image", "group"}: [P] bool per pair, from scores [P, 2, 2] where scores[p, c, i] is the
    score of the pair's caption c with its image i (caption 0 is true of image 0, caption 1 of image 1)."""
    s = scores
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return {"text": text, "image": image, "group": text & image}


def twin_metrics(
    pipeline: RetrieveRerank, split: RetrievalSplit, pairs: Sequence[TwinPair], methods: Sequence[str], stage: str
) -> dict[str, float]:
    """Winoground scores in percent, named per the metric convention:
    `{stage}/{method}/twin_text`, `twin_image`, `twin_group`, and `twin_group_{kind}` for each swap kind
    with pairs; for each method of `methods` (text of retrerank.retrieval.methods.Method): bi by the
    cosine, rerank@k and cross_all by the reranking score. With any cross-encoder method, also
    `{stage}/cross/twin_*`: the cross-encoder's logit alone. `{stage}/twin_pairs` and
    `{stage}/twin_pairs_{kind}` count the pairs. No pairs: {} (the dataset knows no twins)."""
    if not pairs:
        return {}
    kinds = {str(m): Method.parse(str(m)).kind for m in methods}
    scorers = ["bi"] if "bi" in kinds.values() else []
    if any(kind != "bi" for kind in kinds.values()):
        scorers += ["cross", "rerank"]
    captions = sorted({c for pair in pairs for c in pair.captions})
    images = sorted({i for pair in pairs for i in pair.images})
    text_at, image_at = {c: n for n, c in enumerate(captions)}, {i: n for n, i in enumerate(images)}
    # the four (caption, image) pairs of each twin pair, in [P, caption, image] order; a caption is in
    # several twin pairs, so each distinct (caption, image) pair is scored once
    wanted = [(pair.captions[c], pair.images[i]) for pair in pairs for c in (0, 1) for i in (0, 1)]
    distinct = list(dict.fromkeys(wanted))
    at = {key: n for n, key in enumerate(distinct)}
    texts = split.texts
    scored = pair_scores(
        pipeline,
        [texts[c] for c in captions],
        [split.images[i] for i in images],
        [text_at[c] for c, _ in distinct],
        [image_at[i] for _, i in distinct],
        scorers,
    )
    index = torch.tensor([at[key] for key in wanted])
    scores = {name: values[index] for name, values in scored.items()}
    by_kind = {kind: torch.tensor([pair.kind == kind for pair in pairs]) for kind in SWAP_KINDS}
    out = {f"{stage}/twin_pairs": float(len(pairs))}
    out.update({f"{stage}/twin_pairs_{kind}": float(mask.sum()) for kind, mask in by_kind.items() if mask.any()})
    names = {"cross": "cross"} | {name: "bi" if kind == "bi" else "rerank" for name, kind in kinds.items()}
    for name, scorer in names.items():
        if scorer not in scores:
            continue
        right = winoground(scores[scorer].view(-1, 2, 2))
        out.update({f"{stage}/{name}/twin_{score}": 100 * float(ok.float().mean()) for score, ok in right.items()})
        for kind, mask in by_kind.items():
            if mask.any():
                out[f"{stage}/{name}/twin_group_{kind}"] = 100 * float(right["group"][mask].float().mean())
    return out
