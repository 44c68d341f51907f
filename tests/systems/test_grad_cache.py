"""GradCache (objective.grad_cache_chunk): the gradients of the plain batch, with the activations of
one chunk at a time, dropout masks replayed, and a run end to end."""

import json

import pytest
import torch

import retrerank.systems.grad_cache as grad_cache
from experiments.run import main
from tests.adapters.test_adapter_system import SMALL
from tests.systems.test_joint import make_batch, make_system

ROWS = (0, 1, 2, 3, 0, 1)  # 6 captions, 4 images: chunks of 4 leave a partial one; duplicates are masked


def grads(system, objectives, chunk: int, seed: int = 3):
    system.objective.grad_cache_chunk = chunk
    system.zero_grad()
    torch.manual_seed(seed)  # the same negatives (and dropout draws) for both runs
    loss = system.losses(make_batch(system, ROWS), objectives)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in system.named_parameters() if p.grad is not None}


def with_dropout(system, p: float = 0.3):
    system.train()
    for module in system.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    return system


def assert_close(a, b, atol=1e-6):
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=atol), name


@pytest.mark.parametrize("objectives", [["bi"], ["bi", "cross"], ["cross"]], ids=["bi", "joint", "cross"])
def test_grad_cache_gives_the_gradients_of_the_plain_batch(tiny_bert_dir, monkeypatch, objectives):
    system = make_system(tiny_bert_dir).eval()  # dropout off: chunked and whole-batch passes draw alike
    plain_loss, plain = grads(system, objectives, chunk=0)
    calls = []
    real = grad_cache.checkpoint
    monkeypatch.setattr(grad_cache, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached_loss, cached = grads(system, objectives, chunk=4)
    # bi: 6 texts + 6 images -> 2 + 2 chunks; cross: 6 positive + 12 negative pairs -> 5 chunks
    assert len(calls) == 4 * ("bi" in objectives) + 5 * ("cross" in objectives)
    assert torch.allclose(plain_loss, cached_loss, atol=1e-6)
    # chunks sum in another order than the whole batch: gradients of order 1 differ by ~1e-6
    assert_close(plain, cached, atol=1e-5)


def test_grad_cache_replays_each_chunks_dropout_masks(tiny_bert_dir, monkeypatch):
    """With dropout on, the second (gradient) pass of a chunk must draw the masks of its first
    pass: then the gradients equal those of the same chunks run once, with graph."""
    system = with_dropout(make_system(tiny_bert_dir))
    real = grad_cache.checkpoint
    monkeypatch.setattr(grad_cache, "checkpoint", lambda fn, *args, **kw: fn(*args))  # one pass, with graph
    once_loss, once = grads(system, ["bi", "cross"], chunk=4)
    monkeypatch.setattr(grad_cache, "checkpoint", real)
    cached_loss, cached = grads(system, ["bi", "cross"], chunk=4)
    assert torch.allclose(once_loss, cached_loss, atol=1e-6)
    assert_close(once, cached)
    # the check has teeth: without replaying the RNG state the masks, and the gradients, differ
    monkeypatch.setattr(
        grad_cache, "checkpoint", lambda fn, *a, **k: real(fn, *a, **{**k, "preserve_rng_state": False})
    )
    _, unreplayed = grads(system, ["bi", "cross"], chunk=4)
    assert any(not torch.allclose(once[n], unreplayed[n], rtol=1e-5, atol=1e-6) for n in once)


def test_grad_cache_keeps_the_activations_of_no_chunk_in_the_forward_pass(tiny_bert_dir):
    """Peak activation memory is bounded by the chunk: what the forward pass keeps for backward
    outside the checkpointed chunks is the embeddings and the loss over them, not the encoders'
    activations (each chunk's are rebuilt, one chunk at a time, in backward)."""
    system = make_system(tiny_bert_dir)

    def saved_bytes(chunk: int) -> int:
        system.objective.grad_cache_chunk = chunk
        total = [0]

        def pack(tensor):
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            system.losses(make_batch(system, ROWS), ["bi"])
        return total[0]

    plain, cached = saved_bytes(0), saved_bytes(2)
    assert cached * 10 < plain, (cached, plain)


def test_grad_cache_run_end_to_end(tiny_bert_dir, tmp_path):
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=gc",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "objective.grad_cache_chunk=3",
            "model.gradient_checkpointing=true",
        ]
        + [s for s in SMALL if not s.startswith("adapters.")]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/rerank@5/rsum"] <= 600 and metrics["train/loss"] == metrics["train/loss"]  # not NaN


def test_a_negative_chunk_is_a_config_error():
    from retrerank.config import ConfigError, load

    with pytest.raises(ConfigError, match="objective.grad_cache_chunk"):
        load(None, ["objective.grad_cache_chunk=-1"])
