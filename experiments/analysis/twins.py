"""Can a trained run tell a synthetic scene from its twin? And how does it do on a larger test split?

    python -m experiments.analysis.twins runs/<run> [--test-size 250 [--by-kind] [--by-place]] [--out FILE.json]

A twin is the scene with two objects' colours, positions or sizes swapped (data/README.md); each
caption of a scene is false of its twin. For every test caption whose image has its twin in the
split, this asks each scorer which of the two it ranks higher: the bi-encoder (cosine), the
cross-encoder alone (its logit) and the reranking score (eval.scoring of the run). Chance is 50%.
Counts are split by what the twin swapped and by the caption's kind (rel, and, list, obj).

--test-size N also evaluates bi and rerank@<deepest eval.rerank_ks> on a test split of N images
drawn by the same generator (data.synthetic.n_test=N: its own random stream, so train and val are
unchanged), where R@1 moves in steps of 100/(5N) (t2i) and 100/N (i2t) instead of 0.4 and 2.
--by-kind (with --test-size) splits that split's t2i R@1 by caption kind: how many queries each of
bi and rerank@<k> ranks a true image first, and how many only one of them does (where reranking
fixes and breaks; the error analyses of docs/results/ablation.md).
--by-place (with --test-size) does the same for the captions that place one object ("a red circle on
the left"), by the kind of place the caption names (corner, edge, centre), and says where each
method's wrong first image holds the named object: in the phrase's looser English reading ("on the
left": anywhere in the left column; the generator means the middle-left cell only), in another cell,
in the named cell at another size, or nowhere. Its "place-blind chance" is how many of them a reader
that finds the named object but ignores its place would rank right first, on average (ties broken at
random): the bar that says whether a method reads places at all.
Synthetic runs only: the twins and kinds come from the generator. The data is read from (and generated
into) `--data-root`, by default data/ here: never the root stored in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from retrerank.cli import argument_parser, run_main
from retrerank.data.synthetic.captions import scenes_true_of
from retrerank.data.synthetic.scenes import GRID
from retrerank.errors import UserInputError
from retrerank.retrieval.metrics import relevant_hits
from retrerank.retrieval.twins import SCORERS, pair_scores, swapped

from .larger_split import add_common, check_test_size, larger_test_split, open_checked, write_out


def twin_table(pipeline, split, scenes, plans, twins: dict[int, int]) -> dict[str, dict[str, int]]:
    """{"<swap>/<kind>": {"captions", "bi", "cross", "rerank"}}: how many of the captions of a scene
    with a twin each scorer ranks above the twin (ties count as wrong). Only those two pairs per caption
    are scored (retrerank.retrieval.twins.pair_scores)."""
    kinds = [item.kind for plan in plans for item in plan]
    asked = [(q, i, twins[i]) for q, i in enumerate(split.caption_image_index.tolist()) if i in twins]
    captions = sorted({q for q, _, _ in asked})
    images = sorted({r for _, i, j in asked for r in (i, j)})
    text_at, image_at = {q: n for n, q in enumerate(captions)}, {i: n for n, i in enumerate(images)}
    texts = split.texts
    scores = pair_scores(
        pipeline,
        [texts[q] for q in captions],
        [split.images[i] for i in images],
        [text_at[q] for q, _, _ in asked for _ in (0, 1)],
        [image_at[r] for _, i, j in asked for r in (i, j)],
    )
    table: dict[str, Counter] = {}
    for n, (q, i, j) in enumerate(asked):
        key = f"{swapped(scenes[i][0], scenes[j][0])}/{kinds[q]}"
        row = table.setdefault(key, Counter())
        row["captions"] += 1
        for name in SCORERS:
            row[name] += bool(scores[name][2 * n] > scores[name][2 * n + 1])
    return {key: dict(table[key]) for key in sorted(table)}


def first_hits(top1: dict[str, torch.Tensor], relevant, n: int, what: str) -> dict[str, np.ndarray]:
    """{method: [Q] bool, whether query q's first image is relevant}, by the metrics' own hit test."""
    if any(len(first) != n for first in top1.values()) or len(relevant) != n:
        raise ValueError(
            f"{n} {what} for {[len(f) for f in top1.values()]} rankings "
            f"and {len(relevant)} relevance rows: they must be the same queries"
        )
    return {name: relevant_hits(np.asarray(first).reshape(-1, 1), relevant)[:, 0] for name, first in top1.items()}


def kind_table(top1: dict[str, torch.Tensor], relevant, kinds: list[str]) -> dict[str, dict[str, int]]:
    """{kind: {"captions", <method>: queries whose first image is relevant, "only <method>": of those,
    the ones every other method gets wrong}} for t2i queries; top1[method][q] is query q's first image."""
    hits = first_hits(top1, relevant, len(kinds), "caption kinds")
    right_count = sum(h.astype(int) for h in hits.values())  # how many methods get each query right
    table: dict[str, Counter] = {}
    for q, kind in enumerate(kinds):
        row = table.setdefault(kind, Counter({"captions": 0, **{n: 0 for n in hits}, **{f"only {n}": 0 for n in hits}}))
        row["captions"] += 1
        for name, right in hits.items():
            row[name] += int(right[q])
            row[f"only {name}"] += int(right[q] and right_count[q] == 1)
    return {kind: dict(table[kind]) for kind in sorted(table)}


PLACE_GROUPS = {
    0: "corner",
    2: "corner",
    6: "corner",
    8: "corner",
    1: "edge",
    3: "edge",
    5: "edge",
    7: "edge",
    4: "centre",
}


def loose_cells(cell: int) -> set[int]:
    """The cells a phrase for `cell` covers in its everyday English reading: an edge phrase ("on the
    left", "at the top") its whole column or row; a corner or the centre only itself."""
    row, col = divmod(cell, GRID)
    if PLACE_GROUPS[cell] != "edge":
        return {cell}
    if col == 1:  # top or bottom centre: "at the top" / "at the bottom" reads as the whole row
        return {row * GRID + c for c in range(GRID)}
    return {r * GRID + col for r in range(GRID)}  # "on the left" / "on the right": the whole column


def place_table(top1: dict[str, torch.Tensor], relevant, items, scenes) -> dict[str, dict[str, float]]:
    """{corner|edge|centre: {"captions", <method>: right first images, "<method> wrong: loose" (the
    named object sits in the phrase's looser English reading, `loose_cells`), "<method> wrong: other
    cell", "<method> wrong: size" (in the named cell, another size), "<method> wrong: absent",
    "place-blind chance"}} over the t2i queries whose caption places one object; items[q] is query q's
    caption content, scenes[i] image i's scene. The chance adds, per query, its relevant images over the
    images its caption is true of once the place is dropped."""
    hits = first_hits(top1, relevant, len(items), "captions")
    placed = [q for q, item in enumerate(items) if item.kind == "obj" and item.descs[0].cell is not None]
    # the images each placed caption is true of once its place is dropped: where a place-blind reader guesses
    blind = scenes_true_of([items[q]._replace(descs=(items[q].descs[0]._replace(cell=None),)) for q in placed], scenes)
    table: dict[str, Counter] = {}
    chance: Counter = Counter()
    for q, guesses in zip(placed, blind):
        named = items[q].descs[0]
        row = table.setdefault(
            PLACE_GROUPS[named.cell],
            Counter(
                {
                    "captions": 0,
                    **{
                        key: 0
                        for n in hits
                        for key in (
                            n,
                            f"{n} wrong: loose",
                            f"{n} wrong: other cell",
                            f"{n} wrong: size",
                            f"{n} wrong: absent",
                        )
                    },
                }
            ),
        )
        row["captions"] += 1
        chance[PLACE_GROUPS[named.cell]] += len(relevant[q]) / len(guesses)
        for name, right in hits.items():
            if right[q]:
                row[name] += 1
                continue
            cells = [o.cell for o in scenes[int(top1[name][q])] if (o.colour, o.shape) == (named.colour, named.shape)]
            where = (
                "absent"
                if not cells
                else "size"
                if cells[0] == named.cell  # its place is right, its size not
                else "loose"
                if cells[0] in loose_cells(named.cell)
                else "other cell"
            )
            row[f"{name} wrong: {where}"] += 1
    return {group: {**table[group], "place-blind chance": round(chance[group], 2)} for group in sorted(table)}


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("experiments.analysis.twins", __doc__)
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run's folder, trained on synthetic data")
    parser.add_argument("--test-size", type=int, default=0, help="also evaluate on a test split of this many images")
    add_common(parser)
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best: the checkpoint the run tested (its best validation) | last: the end of training",
    )
    parser.add_argument("--by-kind", action="store_true", help="with --test-size: its t2i R@1 by caption kind")
    parser.add_argument(
        "--by-place",
        action="store_true",
        help="with --test-size: t2i R@1 of the captions that place an object, and where misses put it",
    )
    args = parser.parse_args(argv)
    for flag, wanted in (("--by-kind", args.by_kind), ("--by-place", args.by_place)):
        if wanted and not args.test_size:
            raise UserInputError(f"{flag} reads the larger test split: give --test-size N too")
    if args.test_size:
        check_test_size(args.test_size)
    from retrerank.data.synthetic import load_synthetic
    from retrerank.data.synthetic.generate import parse_combos, plan_split, twin_rows
    from retrerank.retrieval.pipeline import RetrieveRerank

    system, cfg = open_checked(args, args.checkpoint)
    if cfg.data.dataset != "synthetic":
        raise UserInputError(f"{args.run}: twins exist in the synthetic data only (data.dataset={cfg.data.dataset})")
    langs, syn = cfg.data.test_langs, cfg.data.synthetic
    if len(langs) != 1:
        raise UserInputError(f"{args.run}: analyse one test language at a time (data.test_langs={langs})")
    split = load_synthetic(syn, cfg.data.root)["test"].filter_languages(langs)
    scenes, plans = plan_split(syn, "test", syn.n_test, parse_combos(syn))
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    out: dict = {
        "run": str(args.run),
        "checkpoint": args.checkpoint,
        "twins": twin_table(pipeline, split, scenes, plans, twin_rows(scenes)),
    }
    totals = Counter()
    for row in out["twins"].values():
        totals.update(row)
    out["twins_total"] = dict(totals)
    if args.test_size:
        big = larger_test_split(args.run, cfg, args.test_size)
        k = max(cfg.eval.rerank_ks)
        metrics = pipeline.evaluate(big, ["bi", f"rerank@{k}"], cfg.eval.ks, stage="larger_test")
        out["larger_test"] = {
            "images": len(big.images),
            "captions": len(big.captions),
            **{
                key: round(float(v), 2)
                for key, v in metrics.items()
                if key.endswith(("rsum", "_r1")) and "ms_per" not in key
            },
        }
        if args.by_kind or args.by_place:  # the corpus is still the larger split's, indexed by evaluate
            big_scenes, big_plans = plan_split(
                dataclasses.replace(syn, n_test=args.test_size), "test", args.test_size, parse_combos(syn)
            )
            items = [item for plan in big_plans for item in plan]
            top1 = {
                "bi": pipeline.text_to_image(big.texts, 1).indices[:, 0],
                f"rerank@{k}": pipeline.text_to_image(big.texts, 1, k).indices[:, 0],
            }
            if args.by_kind:
                out["larger_test_by_kind"] = kind_table(top1, big.caption_relevant, [item.kind for item in items])
            if args.by_place:
                out["larger_test_by_place"] = place_table(
                    top1, big.caption_relevant, items, [scene for scene, _ in big_scenes]
                )
    print(json.dumps(out, indent=1))
    write_out(args.out, out, argv, "experiments.analysis.twins")
    return out


if __name__ == "__main__":
    run_main(main)
