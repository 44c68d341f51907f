"""The pipeline's evaluation part: recall, R-Precision and mAP@R of retrieval methods on a split, with timings.

`Evaluation` is a mixin of `RetrieveRerank` (retrerank.retrieval.pipeline): it runs each method
through the pipeline's own search and pair scoring, so metrics and search results agree; the
metric arithmetic is retrerank.retrieval.metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from retrerank.data.records import RetrievalSplit
from retrerank.retrieval.methods import Method
from retrerank.retrieval.metrics import DIRECTIONS, method_metrics, ranking_precision, recall_at_k
from retrerank.retrieval.twins import TwinPair, twin_metrics
from retrerank.torch_utils import synced_clock


class Evaluation:
    """`evaluate` (a part of RetrieveRerank; uses its Search and PairScoring parts)."""

    bi_encoder: nn.Module
    cross_encoder: nn.Module | None

    def evaluate(
        self,
        split: RetrievalSplit,
        methods: Sequence[str | Method],
        ks: Sequence[int] = (1, 5, 10),
        stage: str = "test",
        twins: Sequence[TwinPair] = (),
    ) -> dict[str, float]:
        """Recall@ks, R-Precision and mAP@R in both directions plus timings for each method, as one flat dict.

        methods: Methods or their text (retrerank.retrieval.methods): "bi", "rerank@{r}" (bi-encoder
        top-r reranked by the cross-encoder; a corpus smaller than r is reranked whole), "cross_all"
        (the cross-encoder scores every pair); metrics are named by `str(method)`. The corpus is indexed once;
        its time is reported as `{stage}/index_images_ms` and `{stage}/index_texts_ms`.
        Images without captions stay in the t2i corpus but are not i2t queries.
        Ground truth: a caption is relevant to its own image and, where the dataset records
        exact relevance (CaptionRecord.also), to every other image it is true of; an image
        query's relevant captions are all captions true of it. Every method ranks each query
        at least R deep (R = its number of relevant items) for R-Precision and mAP@R.
        twins: the split's twin pairs (retrerank.retrieval.twins.split_twins); with any, also their
        Winoground text, image and group scores per method (`twin_metrics`: `{stage}/{method}/twin_*`).
        """
        plan = [Method.parse(str(method)) for method in methods]  # a bad name fails before any work
        ks = list(ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"ks must be a non-empty list of k >= 1, got {ks}")
        if max(ks) > min(len(split.images), len(split.captions)):
            raise ValueError(
                f"k={max(ks)} exceeds the size of split {split.name!r} "
                f"({len(split.images)} images, {len(split.captions)} captions)"
            )
        if any(method.kind != "bi" for method in plan):
            self._require_cross()

        texts = split.texts
        t2i_relevant = split.caption_relevant  # each caption's own image, or every image it is true of
        image_captions = split.image_captions()
        i2t_rows = [i for i, captions in enumerate(image_captions) if len(captions)]
        i2t_queries = [split.images[i] for i in i2t_rows]
        i2t_relevant = [image_captions[i] for i in i2t_rows]
        relevant = {"t2i": t2i_relevant, "i2t": i2t_relevant}
        corpus_size = {"t2i": len(split.images), "i2t": len(texts)}
        most_relevant = {d: max(map(len, relevant[d])) for d in DIRECTIONS}
        clock = synced_clock(self.bi_encoder, self.cross_encoder)

        def depth(direction: str, rerank_top: int | None) -> int:
            # rerank@r on a corpus smaller than r reranks all of it
            n = corpus_size[direction]
            return min(n, max(max(ks), most_relevant[direction], min(rerank_top or 0, n)))

        results: dict[str, float] = {}
        if any(method.kind != "cross_all" for method in plan):
            start = clock()
            self.index_images(split.images)
            results[f"{stage}/index_images_ms"] = 1000 * (clock() - start)
            start = clock()
            self.index_texts(texts)
            results[f"{stage}/index_texts_ms"] = 1000 * (clock() - start)

        for method in plan:
            if method.kind == "cross_all":
                start = clock()
                scores = self.score_all(texts, split.images)
                total_ms = 1000 * (clock() - start)
                rankings = {
                    "t2i": _rank(scores, depth("t2i", None)),
                    "i2t": _rank(scores.T[i2t_rows], depth("i2t", None)),
                }
                # Each image query needs n_texts pair scores and each text query n_images.
                ms = {"i2t": total_ms / len(split.images), "t2i": total_ms / len(texts)}
            else:
                rankings, ms = {}, {}
                for direction, search, queries in (
                    ("t2i", self.text_to_image, texts),
                    ("i2t", self.image_to_text, i2t_queries),
                ):
                    start = clock()
                    rankings[direction] = search(queries, depth(direction, method.depth), method.depth).indices
                    ms[direction] = 1000 * (clock() - start) / len(queries)
            scores_by_direction = {
                d: {**recall_at_k(rankings[d], relevant[d], ks), **ranking_precision(rankings[d], relevant[d])}
                for d in DIRECTIONS
            }
            results.update(method_metrics(stage, str(method), scores_by_direction, ms))
        results.update(twin_metrics(self, split, twins, [str(method) for method in plan], stage))
        return results


def _rank(scores: Tensor, k: int) -> Tensor:
    """Top-k columns per row, best first, ties by lower column (as ExactIndex does)."""
    return scores.argsort(dim=1, descending=True, stable=True)[:, :k]
