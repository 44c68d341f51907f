"""examples.png: a few captions with the bi-encoder's and the reranked top 5, through the pipeline."""

import numpy as np
import torch

from retrerank.data.records import CaptionRecord, RetrievalSplit
from retrerank.examples import find_examples, pick_queries, plot_examples
from retrerank.retrieval.pipeline import RetrieveRerank
from tests.retrieval.test_pipeline import FakeBi, FakeCross, fan, make_image


def test_examples_show_the_bi_and_the_reranked_ranking_of_the_same_pipeline(tmp_path):
    images = [make_image(i, v) for i, v in enumerate(fan(6))]
    images[0] = type(images[0])(
        images[0].image_id, images[0].features, images[0].boxes, np.zeros((8, 8, 3), dtype=np.uint8)
    )  # one with pixels, the rest region-only
    texts = ["q0", "q1"]
    split = RetrievalSplit("test", images, [CaptionRecord("c0", "img3", "q0"), CaptionRecord("c1", "img5", "q1")])
    bi = FakeBi({t: [1.0, 0.0] for t in texts})  # both rank images 0, 1, 2, ... by cosine
    table = torch.zeros(2, 6)
    table[0, 3], table[1, 1] = 5.0, 4.0  # the cross-encoder lifts image 3 for q0 and image 1 for q1
    pipeline = RetrieveRerank(bi, FakeCross(texts, table), progress=False)
    examples = find_examples(pipeline, split, n=2, k=5, rerank_top=5)
    assert [e.text for e in examples] == texts and examples[0].relevant == {3} and examples[1].relevant == {5}
    assert [row for row, _ in examples[0].bi] == [0, 1, 2, 3, 4]
    assert [row for row, _ in examples[0].reranked][:2] == [3, 0] and examples[0].reranked[0][1] == 5.0
    assert [row for row, _ in examples[1].reranked][0] == 1
    png = plot_examples(examples, split, tmp_path / "examples.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_queries_are_spread_over_the_split():
    split = RetrievalSplit(
        "s", [make_image(0, [1.0, 0.0])], [CaptionRecord(f"c{i}", "img0", f"t{i}") for i in range(10)]
    )
    assert pick_queries(split, 4) == [0, 3, 6, 9] and pick_queries(split, 20) == list(range(10))
