"""The contrastive losses (InfoNCE, SigLIP's sigmoid) under data parallelism: 2 CPU processes (gloo)
give the loss and the gradients of one process over the same global batch, with and without extra
(mined) negatives, also with GradCache's chunked encoding on each rank."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retrerank.objectives.contrastive import InfoNCE
from retrerank.objectives.sigmoid import SigmoidPairs
from retrerank.systems.grad_cache import chunked
from tests.distributed import end_worker

GLOBAL, DIM, WORLD = 8, 6, 2


def model_and_batch(kind="infonce"):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(DIM, DIM)
    loss = InfoNCE(0.1) if kind == "infonce" else SigmoidPairs(0.5, -2.0)
    texts, images = torch.randn(GLOBAL, DIM), torch.randn(GLOBAL, DIM)
    image_index = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])  # captions of one image on both ranks' sides
    return encoder, loss, texts, images, image_index


def mined():
    """One mined image and one mined caption per item (their image rows include in-batch ones)."""
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(GLOBAL, DIM, generator=generator),
        torch.tensor([9, 3, 0, 8, 1, 9, 2, 0]),
        torch.randn(GLOBAL, DIM, generator=generator),
        torch.tensor([4, 6, 5, 0, 7, 2, 9, 1]),
    )


def step(encoder, loss, texts, images, image_index, extra=None, chunk=0, rank=0, world_size=1):
    embed = lambda x: chunked(lambda b: torch.nn.functional.normalize(encoder(b["x"]), dim=-1), ({"x": x},), chunk)  # noqa: E731
    negatives = () if extra is None else (embed(extra[0]), extra[1], embed(extra[2]), extra[3])
    value = loss(embed(texts), embed(images), image_index, *negatives, rank=rank, world_size=world_size)
    value.backward()
    return value.detach(), [p.grad.clone() for p in [*encoder.parameters(), *loss.parameters()]]


def worker(rank, path, out, chunk, kind):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    encoder, loss, texts, images, image_index = model_and_batch(kind)
    rows = slice(rank * GLOBAL // WORLD, (rank + 1) * GLOBAL // WORLD)
    results = []
    for extra in (None, [t[rows] for t in mined()]):
        encoder.zero_grad()
        loss.zero_grad()
        value, grads = step(encoder, loss, texts[rows], images[rows], image_index[rows], extra, chunk, rank, WORLD)
        dist.all_reduce(value)
        for grad in grads:  # what DDP does: average the gradients over the ranks
            dist.all_reduce(grad)
            grad /= WORLD
        results.append({"loss": value / WORLD, "grads": grads})
    if rank == 0:
        torch.save(results, out)
    end_worker()


@pytest.mark.parametrize(
    "kind, chunk", [("infonce", 0), ("infonce", 3), ("sigmoid", 0)], ids=["plain", "grad_cache", "sigmoid"]
)  # 3: chunks of 3 and 1 local rows
def test_two_processes_equal_one_process_over_the_global_batch(tmp_path, kind, chunk):
    out = tmp_path / "distributed.pt"
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(out), chunk, kind), nprocs=WORLD, join=True)
    for distributed, extra in zip(torch.load(out), (None, mined())):
        loss, grads = step(*model_and_batch(kind), extra)
        assert torch.allclose(distributed["loss"], loss, atol=1e-5)
        for mine, theirs in zip(distributed["grads"], grads):
            assert torch.allclose(mine, theirs, atol=1e-5)
        assert grads[0].abs().sum() > 0
