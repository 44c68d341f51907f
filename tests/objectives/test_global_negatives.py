"""Matching-loss negatives from the global batch: 2 CPU processes (gloo) choose what one process
chooses over the global batch, fetch the right inputs from the other rank, and give one process's
loss and gradients."""

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord
from retrerank.objectives.global_negatives import draw, draw_global, global_negative_pairs
from tests.distributed import end_worker
from tests.systems.test_joint import make_system

GLOBAL, WORLD, DIM = 8, 2, 6
INDEX = torch.tensor([0, 1, 2, 2, 2, 3, 4, 5])  # image 2's captions on both ranks
TEXTS = [
    "a red circle",
    "a blue square left of a green star",
    "a star",
    "the big yellow triangle",
    "a circle",
    "an orange diamond above a small purple square",
    "a square",
    "green",
]


def inputs():
    """Texts and images of the global batch; rank 1's are longer (more tokens and regions)."""
    rng = np.random.default_rng(0)
    images = [
        ImageRecord(
            f"im{i}",
            rng.normal(size=(2 + i % 5, 8)).astype(np.float32),
            rng.uniform(size=(2 + i % 5, 4)).astype(np.float32),
        )
        for i in range(GLOBAL)
    ]

    def embed(seed):
        return F.normalize(torch.randn(GLOBAL, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)

    return images, embed(1), embed(2)


def rows(rank):
    return slice(rank * GLOBAL // WORLD, (rank + 1) * GLOBAL // WORLD) if rank is not None else slice(None)


def choose(rank):
    """(t2i, i2t, valid, global rows, pairs) of the rank's rows (rank None: one process)."""
    system = make_system(TINY[0], global_negatives=True, hard_negatives=2, random_negatives=1)
    images, text_emb, image_emb = inputs()
    r = rows(rank)
    text = system.bi_encoder.tokenize(TEXTS[r])
    image = collate_images(images[r])
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    ranks = {"rank": rank or 0, "world_size": 1 if rank is None else WORLD}
    drawn = draw_global(text_emb[r], image_emb[r], INDEX[r], 10.0, 2, 1, gen(), **ranks)
    pairs, _ = global_negative_pairs(text, image, INDEX[r], text_emb[r], image_emb[r], 10.0, 2, 1, gen(), **ranks)
    torch.manual_seed(1)
    system.eval()  # no dropout: the losses of both runs must agree
    loss = system.losses({"text": text, "image": image, "image_index": INDEX[r]}, ["cross"])["loss_cross"]
    loss.backward()
    grad = system.cross_encoder.head[1].weight.grad.clone()
    return {"drawn": drawn, "pairs": pairs, "loss": loss.detach(), "grad": grad}


TINY = [None]


def worker(rank, path, tiny, out):
    TINY[0] = tiny
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    torch.save(choose(rank), f"{out}.{rank}")
    end_worker()


def test_two_processes_choose_and_score_what_one_process_does_over_the_global_batch(tmp_path, tiny_bert_dir):
    out = str(tmp_path / "rank")
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), tiny_bert_dir, out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(WORLD)]
    TINY[0] = tiny_bert_dir
    one = choose(None)
    t2i, i2t, valid, global_rows = one["drawn"]
    assert valid.all() and torch.equal(global_rows, torch.arange(GLOBAL))
    for k, name in enumerate(("t2i", "i2t", "valid", "rows")):
        assert torch.equal(torch.cat([r["drawn"][k] for r in ranks]), one["drawn"][k]), name
    # negatives come from the whole global batch, never the row's own image; the 2 hard ones distinct
    assert (INDEX[t2i] != INDEX[:, None]).all() and (INDEX[i2t] != INDEX[:, None]).all()
    assert all(len(set(row)) == 2 for row in t2i[:, :2].tolist()) and (t2i[:4] >= 4).any() and (t2i[4:] < 4).any()
    # the inputs fetched from the other rank are the negatives' own (padding aside)
    for direction in range(2):
        for key_side in range(2):
            merged = {
                key: [r["pairs"][direction][key_side][key] for r in ranks] for key in one["pairs"][direction][key_side]
            }
            for key, parts in merged.items():
                want = one["pairs"][direction][key_side][key]
                got = torch.cat([p[:, : want.shape[1]] for p in parts])
                assert torch.equal(got, want[:, : got.shape[1]]), key
                assert all(not p[:, want.shape[1] :].any() for p in parts)  # only padding beyond
    # one process's loss and (DDP-averaged) gradient over the global batch
    assert torch.allclose(sum(r["loss"] for r in ranks) / WORLD, one["loss"], atol=1e-5)
    assert torch.allclose(sum(r["grad"] for r in ranks) / WORLD, one["grad"], atol=1e-5)
    assert one["grad"].abs().sum() > 0


def test_draw_follows_the_similarities_without_replacement_and_never_a_forbidden_cell():
    logits = torch.tensor([[0.0, 50.0, 49.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    allowed = torch.tensor([[True, True, True, False], [False, False, True, False]])
    noise = torch.rand(2, 3, generator=torch.Generator().manual_seed(0))
    picks = draw(logits, allowed, noise)
    assert set(picks[0, :2].tolist()) == {1, 2}  # the two similar cells first, each once
    assert picks[1].tolist() == [2, 2, 2]  # one allowed cell: drawn again
    assert not allowed[1, picks[1]].logical_not().any()
