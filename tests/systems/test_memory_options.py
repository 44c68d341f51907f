"""Speed and memory switches: gradient checkpointing gives the same loss and gradients, and
bf16 mixed precision trains and evaluates end to end on the CPU."""

import json

import torch

from experiments.run import main
from tests.adapters.test_adapter_system import SMALL
from tests.systems.test_joint import make_batch, make_system


def loss_and_grads(tiny_bert_dir, checkpointing: bool):
    system = make_system(tiny_bert_dir)
    system.backbone.gradient_checkpointing = checkpointing
    for layer in system.backbone.layers:  # dropout on: the recomputation must replay its masks
        layer.train()
        for module in layer.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.3
    batch = make_batch(system)
    torch.manual_seed(3)
    loss = system.losses(batch, ["bi", "cross"])["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in system.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_bert_dir, monkeypatch):
    import retrerank.backbones.single_stream as single_stream

    calls = []
    real = single_stream.checkpoint
    monkeypatch.setattr(single_stream, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain_loss, plain = loss_and_grads(tiny_bert_dir, False)
    assert not calls
    ckpt_loss, ckpt = loss_and_grads(tiny_bert_dir, True)
    assert calls  # the blocks really ran under checkpointing
    assert torch.allclose(plain_loss, ckpt_loss, atol=1e-6)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-5), name


def test_bf16_mixed_precision_and_checkpointing_run_end_to_end(tiny_bert_dir, tmp_path):
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=bf16",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "trainer.precision=bf16-mixed",
            "model.gradient_checkpointing=true",
        ]
        + [s for s in SMALL if not s.startswith("adapters.")]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/rerank@5/rsum"] <= 600 and metrics["train/loss"] == metrics["train/loss"]  # not NaN
