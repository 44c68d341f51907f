"""`bench peers` rerank_loop: retrieve-then-rerank@k beside the per-query loop of LAVIS's `compute_sim_matrix`.

Both sides start from the same texts and images, with the same model and threads, and rerank the
bi-encoder's top k in both directions (every caption against the images, every image against the
captions):
- ours: `RetrieveRerank` as evaluation and search use it: index both corpora (embeddings and, for a
  late-interaction cross-encoder, each item's layer-m states, computed once), search, rerank the top
  k of every query from the cached states in batches of eval.rerank_batch_size pairs;
- the peer, written as LAVIS writes it: embed both corpora, one similarity matrix, then for each
  query its top k, and one batch of those k pairs through the full cross-encoder (`score`: tokenize,
  collate, every block; no cached states), plus bi_weight x cosine with scoring=cross+bi as LAVIS
  adds its ITC similarity to the ITM score.

Ours keeps its states in float32 here (`state_dtype`), so the two must agree to 1e-5: `equal` says
whether every query got the same candidates (ties of the bi-encoder aside) with scores within 1e-5
(`max_abs_diff`). The model and data: a run's best checkpoint on its
test split with `--checkpoint RUN`, else the default recipe's untrained model on its test split
(experiments.bench.run_model).
"""

from __future__ import annotations

import torch

from retrerank.torch_utils import device_of, inference, to_device

SCORE_TOLERANCE = 1e-5


def ours(pipeline, texts: list[str], images: list, k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    pipeline.index_images(images)
    pipeline.index_texts(texts)
    t2i = pipeline.text_to_image(texts, k, rerank_top=k)
    i2t = pipeline.image_to_text(images, k, rerank_top=k)
    return {"t2i": (t2i.indices, t2i.scores), "i2t": (i2t.indices, i2t.scores)}


def per_query_loop(pipeline, texts: list[str], images: list, k: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LAVIS's compute_sim_matrix on our model: one batch of a query's k candidates at a time."""
    cross = pipeline.cross_encoder
    device = device_of(cross)
    sims = (pipeline.embed_images(images) @ pipeline.embed_texts(texts).T).cpu()  # [images, texts]
    weight = pipeline.bi_weight if pipeline.scoring == "cross+bi" else 0.0
    out = {}
    with inference(cross):
        for direction, matrix in (("i2t", sims), ("t2i", sims.T)):
            rows, scores = [], []
            for query, row in enumerate(matrix):
                top_sims, top = row.topk(k)
                top = top.tolist()
                if direction == "i2t":
                    pair_texts, pair_images = [texts[j] for j in top], [images[query]] * k
                else:
                    pair_texts, pair_images = [texts[query]] * k, [images[j] for j in top]
                logits = cross.score(
                    to_device(cross.tokenize(pair_texts), device), to_device(pipeline._collate(pair_images), device)
                )
                rows.append(torch.tensor(top))
                scores.append(logits.reshape(-1).float().cpu() + weight * top_sims)
            out[direction] = (torch.stack(rows), torch.stack(scores))
    return out


def agreement(ours_out: dict, loop_out: dict) -> dict:
    """The share of queries with the same candidate set on both sides, and the largest score
    difference over the candidates both sides scored."""
    same, total, worst = 0, 0, 0.0
    for direction, (ids, scores) in ours_out.items():
        loop_ids, loop_scores = loop_out[direction]
        for a, s, b, t in zip(ids.tolist(), scores, loop_ids.tolist(), loop_scores):
            total += 1
            same += set(a) == set(b)
            mine = dict(zip(a, s.tolist()))
            for j, value in zip(b, t.tolist()):
                if j in mine:
                    worst = max(worst, abs(mine[j] - value))
    return {
        "equal": same == total and worst <= SCORE_TOLERANCE,
        "same_candidates": round(same / total, 6),
        "max_abs_diff": worst,
    }
