"""What the cross-encoder's remaining matching loss is made of, on a split of the synthetic data.

    python -m experiments.analysis.plateau runs/<run> [--split val|test] [--size N] [--checkpoint best|last]
        [--hard 2] [--random 2] [--out FILE.json]

Every caption of the split (in the run's test language) is scored with its own image (the positive)
and with negatives of these kinds:
- t2i `hard`: the `--hard` images the bi-encoder ranks highest among those the caption is false of
  (what the matching loss samples most in training);
- t2i `random`: `--random` images drawn uniformly among those the caption is false of;
- t2i `twin/<swap>`: the image's twin (two objects' colours, cells or sizes swapped), where the split
  holds it and the caption is false of it;
- i2t `foil/<change>`: the caption changed in one thing so that it is false of its image, every such
  near miss the generator can write (data/synthetic/captions.py): another `colour`, `size` or `cell`
  for one object, two objects' colours or sizes swapped (`binding`), the relation inverted
  (`relation`).
Each pair's loss is the pairwise logistic loss log(1 + exp(s_neg - s_pos)) of the cross-encoder's
logits (the listwise loss over the positive and that one negative); a win is s_pos > s_neg. The table
has one row per caption kind (`obj+place`: one object and its cell; `obj`, `rel`, `and`, `list`) and
negative kind: pairs, mean loss, its share of the summed loss, and the win rate of the cross-encoder
and of the bi-encoder's cosine on the same pairs. `by_negative` and `by_caption` sum over the other
key; `metrics` holds every figure again under flat keys (`by_negative/foil/cell/cross_wins`). All
negatives are false of the caption by the generator's `holds`: the table is free of false negatives by
construction.

`--size N` draws the split again with N images (its own random stream: the other splits do not change).
Synthetic runs only. The data is read from (and generated into) `--data-root`, by default data/ here.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from retrerank.cli import argument_parser, run_main
from retrerank.errors import UserInputError

from .larger_split import add_common, open_checked, write_out

SIZE_KEYS = {"val": "n_val", "test": "n_test"}


def caption_kind(item) -> str:
    return "obj+place" if item.kind == "obj" and item.descs[0].cell is not None else item.kind


def foil_change(item, foil) -> str:
    """What a near miss changed of its caption: relation, binding (two objects), or one object's
    colour, size or cell."""
    if foil.relation != item.relation:
        return "relation"
    changed = [(a, b) for a, b in zip(item.descs, foil.descs) if a != b]
    if len(changed) != 1:
        return "binding"
    a, b = changed[0]
    return next(field for field in ("colour", "size", "cell") if getattr(a, field) != getattr(b, field))


def negatives(items, scenes, relevant, sims, twins, lang: str, hard: int, rand: int, seed: int):
    """(texts, pairs): the foil texts to add after the split's captions, and one (caption row, negative
    text row, negative image row, caption kind, negative kind) per negative pair (module docstring)."""
    from retrerank.data.synthetic.captions import _foil_families, holds
    from retrerank.data.synthetic.language import realize
    from retrerank.retrieval.twins import swapped

    n_images = sims.shape[1]
    foil_texts: list[str] = []
    pairs = []
    draw = random.Random(seed)
    for q, (item, image, true_of) in enumerate(zip(items, scenes["own"], relevant)):
        kind = caption_kind(item)
        false = torch.ones(n_images, dtype=torch.bool)
        false[torch.as_tensor(true_of, dtype=torch.long)] = False
        ranked = sims[q].masked_fill(~false, float("-inf")).argsort(descending=True, stable=True)
        for i in ranked[: min(hard, int(false.sum()))].tolist():
            pairs.append((q, q, i, kind, "hard"))
        pool = false.nonzero().squeeze(1).tolist()
        for i in draw.sample(pool, min(rand, len(pool))):
            pairs.append((q, q, i, kind, "random"))
        twin = twins.get(image)
        if twin is not None and false[twin]:
            what = swapped(scenes["scene"][image], scenes["scene"][twin])
            pairs.append((q, q, twin, kind, f"twin/{what}"))
        scene = scenes["scene"][image]
        rnd = random.Random(f"{seed}/{q}")
        for family in _foil_families(item).values():
            for foil in family:
                if holds(foil, scene):
                    continue
                pairs.append((q, -1 - len(foil_texts), image, kind, f"foil/{foil_change(item, foil)}"))
                foil_texts.append(realize(foil, lang, rnd))
    return foil_texts, pairs


def table(rows: list[tuple[str, str]], loss: torch.Tensor, cross_win: torch.Tensor, bi_win: torch.Tensor):
    """{key: {pairs, loss, loss_share, cross_wins, bi_wins}} for keys "<caption kind>/<negative kind>",
    and the sums by negative kind and by caption kind."""
    groups: dict[str, dict[str, list[int]]] = {"table": defaultdict(list), "by_negative": defaultdict(list)}
    groups["by_caption"] = defaultdict(list)
    for p, (caption, negative) in enumerate(rows):
        groups["table"][f"{caption}/{negative}"].append(p)
        groups["by_negative"][negative].append(p)
        groups["by_caption"][caption].append(p)
    total = float(loss.sum())
    out = {}
    for name, keyed in groups.items():
        out[name] = {}
        for key in sorted(keyed):
            at = torch.tensor(keyed[key])
            out[name][key] = {
                "pairs": len(at),
                "loss": round(float(loss[at].mean()), 4),
                "loss_share": round(100 * float(loss[at].sum()) / total, 1) if total else 0.0,
                "cross_wins": round(100 * float(cross_win[at].float().mean()), 1),
                "bi_wins": round(100 * float(bi_win[at].float().mean()), 1),
            }
    out["total"] = {
        "pairs": len(rows),
        "loss": round(float(loss.mean()), 4),
        "cross_wins": round(100 * float(cross_win.float().mean()), 1),
        "bi_wins": round(100 * float(bi_win.float().mean()), 1),
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("experiments.analysis.plateau", __doc__)
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run's folder, trained on synthetic data")
    parser.add_argument("--split", choices=tuple(SIZE_KEYS), default="val", help="the split to read (default: val)")
    parser.add_argument("--size", type=int, default=0, help="draw the split again with this many images")
    parser.add_argument("--hard", type=int, default=2, help="bi-encoder hard negative images per caption")
    parser.add_argument("--random", type=int, default=2, help="uniform negative images per caption")
    parser.add_argument("--seed", type=int, default=0, help="the draws of random negatives and foil wordings")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best: the checkpoint the run tested (its best validation) | last: the end of training",
    )
    add_common(parser)
    args = parser.parse_args(argv)
    if args.size < 0 or args.size == 1 or min(args.hard, args.random) < 0:
        raise UserInputError("--size must be 0 (the run's own split) or at least 2; --hard and --random >= 0")
    from retrerank.data.synthetic import load_synthetic
    from retrerank.data.synthetic.generate import parse_combos, plan_split, twin_rows
    from retrerank.retrieval.pipeline import RetrieveRerank
    from retrerank.retrieval.twins import pair_scores

    system, cfg = open_checked(args, args.checkpoint)
    if cfg.data.dataset != "synthetic":
        raise UserInputError(f"{args.run}: the plateau needs the synthetic data (data.dataset={cfg.data.dataset})")
    langs = cfg.data.test_langs
    if len(langs) != 1:
        raise UserInputError(f"{args.run}: analyse one test language at a time (data.test_langs={langs})")
    syn = cfg.data.synthetic
    if args.size:
        syn = dataclasses.replace(syn, **{SIZE_KEYS[args.split]: args.size})
    n = getattr(syn, SIZE_KEYS[args.split])
    split = load_synthetic(syn, cfg.data.root)[args.split].filter_languages(langs)
    planned, plans = plan_split(syn, args.split, n, parse_combos(syn))
    items = [item for plan in plans for item in plan]
    if len(items) != len(split.texts):
        raise UserInputError(f"{args.run}: {len(split.texts)} captions in the {args.split} split, {len(items)} planned")
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    text_emb, image_emb = pipeline.embed_texts(split.texts).cpu(), pipeline.embed_images(split.images).cpu()
    sims = text_emb @ image_emb.T
    scenes = {"own": split.caption_image_index.tolist(), "scene": [scene for scene, _ in planned]}
    foil_texts, negs = negatives(
        items, scenes, split.caption_relevant, sims, twin_rows(planned), langs[0], args.hard, args.random, args.seed
    )
    texts = list(split.texts) + foil_texts
    row = lambda t: t if t >= 0 else len(split.texts) - 1 - t  # noqa: E731 (foil text -1 - f sits after the captions)
    # each negative pair, then every caption's positive (the last len(items) pairs)
    text_rows = [row(t) for _, t, _, _, _ in negs] + list(range(len(items)))
    image_rows = [i for _, _, i, _, _ in negs] + scenes["own"]
    scores = pair_scores(pipeline, texts, split.images, text_rows, image_rows, ("bi", "cross"))
    owner = torch.tensor([q for q, _, _, _, _ in negs], dtype=torch.long)
    positive = {name: values[len(negs) :][owner] for name, values in scores.items()}
    negative = {name: values[: len(negs)] for name, values in scores.items()}
    loss = F.softplus(negative["cross"] - positive["cross"])
    out = {
        "run": str(args.run),
        "checkpoint": args.checkpoint,
        "split": args.split,
        "images": len(split.images),
        "captions": len(split.texts),
        **table(
            [(c, k) for _, _, _, c, k in negs],
            loss,
            positive["cross"] > negative["cross"],
            positive["bi"] > negative["bi"],
        ),
    }
    # flat as well, "<table>/<key>/<field>", so that a page can render any figure (experiments.report)
    out["metrics"] = {
        f"{name}/{key}/{field}": value
        for name in ("table", "by_negative", "by_caption")
        for key, row in out[name].items()
        for field, value in row.items()
    } | {f"total/{field}": value for field, value in out["total"].items()}
    print(json.dumps(out, indent=1))
    write_out(args.out, out, argv, "experiments.analysis.plateau")
    return out


if __name__ == "__main__":
    run_main(main)
