"""Search a run's split from the terminal:

    python -m experiments.search RUN_DIR "a red circle left of a blue square" [--k 5] [--rerank-top 20]
    python -m experiments.search RUN_DIR --image syn-test-00003      # image -> the split's captions

Loads the run's best checkpoint and split (`--split`, default test) with retrerank.search.open_run,
the data from `--data-root` (default: data/ in the current folder; never a path stored in the
checkpoint), and prints the bi-encoder's top k and the reranked top k (rank, id, score; `*` marks a hit that is
true of the query where the query is one of the split's captions, or an image of the split).
No run folder or an unknown image id is one line (retrerank.cli.run_main).
"""

from __future__ import annotations

import argparse

from retrerank.cli import argument_parser, run_main
from retrerank.config import ConfigError
from retrerank.search import SPLITS, Ranking, image_row, open_run, relevant_captions, relevant_images


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argument_parser("experiments.search", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (with checkpoints/best.ckpt)")
    parser.add_argument("query", nargs="?", help="text to find images for")
    parser.add_argument("--image", help="an image id of the split: find its captions instead")
    parser.add_argument("--k", type=int, default=5, help="results shown per ranking")
    parser.add_argument(
        "--rerank-top",
        type=int,
        help="bi-encoder candidates the cross-encoder reranks (default: the deepest of the run's eval.rerank_ks)",
    )
    parser.add_argument("--split", choices=SPLITS, default="test", help="the split searched (default: test)")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="the folder that holds the run's dataset (the synthetic data is generated there on first use); "
        "default: data/ here",
    )
    parser.add_argument(
        "--scoring", choices=["cross", "cross+bi"], help="rerank score (default: the run's eval.scoring)"
    )
    args = parser.parse_args(argv)
    if (args.query is None) == (args.image is None):
        raise ConfigError("give either a text query or --image ID")
    if args.k < 1 or (args.rerank_top is not None and args.rerank_top < 1):
        raise ConfigError("--k and --rerank-top must be >= 1")
    return args


def show(title: str, ranking: Ranking, relevant: set[str], texts: dict[str, str]) -> None:
    print(title)
    for rank, hit in enumerate(ranking.hits[0], 1):
        mark = "*" if hit.id in relevant else " "
        print(f"  {rank:>3}  {mark} {hit.id:<20} {hit.score:>8.3f}  {texts.get(hit.id, '')}".rstrip())


def main(argv: list[str]) -> tuple[Ranking, Ranking]:
    args = parse(argv)
    searcher, split = open_run(args.run_dir, args.split, data_root=args.data_root)
    searcher.index_split(split)
    top = args.rerank_top or searcher.rerank_depth
    if args.image is None:
        k, query, texts = min(args.k, len(split.images)), args.query, {}
        relevant = relevant_images(split, query)
        rank = lambda depth: searcher.rank_text(query, k, depth, args.scoring)  # noqa: E731
    else:
        k, query, texts = min(args.k, len(split.captions)), args.image, {c.caption_id: c.text for c in split.captions}
        record, relevant = split.images[image_row(split, args.image)], relevant_captions(split, args.image)
        rank = lambda depth: searcher.rank_image([record], k, depth, args.scoring)  # noqa: E731
    bi, reranked = rank(None), rank(top)
    scoring = args.scoring or searcher.pipeline.scoring
    print(f"query: {query!r} ({args.split} split, {len(split.images)} images, {len(split.captions)} captions)")
    show(f"bi-encoder top {k} (retrieval {bi.retrieve_ms:.1f} ms)", bi, relevant, texts)
    show(
        f"reranked top {k} (cross-encoder over the top {top}, scoring {scoring}, rerank {reranked.rerank_ms:.1f} ms)",
        reranked,
        relevant,
        texts,
    )
    print("* true of the query" if relevant else "(not one of the split's captions: no ground truth to mark)")
    return bi, reranked


if __name__ == "__main__":
    run_main(main)
