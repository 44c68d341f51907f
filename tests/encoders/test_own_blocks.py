"""model.cross_blocks=own: the cross-encoder runs its own copies of the blocks from the join on."""

import json

import pytest
import torch

from experiments.run import main
from retrerank.build import build_encoders, load_system
from retrerank.config import ConfigError, ModelConfig, load
from retrerank.data.collate import collate_images
from retrerank.data.synthetic import load_synthetic
from retrerank.retrieval.pipeline import RetrieveRerank
from tests.retrieval.test_late_interaction import FEATURES, TEXTS, images
from tests.systems.test_late_training import LATE


def pair(tiny_bert_dir, join_layer: int, blocks: str):
    torch.manual_seed(0)  # the same visual embedding and head for both kinds of blocks
    return build_encoders(ModelConfig(backbone=tiny_bert_dir, join_layer=join_layer, cross_blocks=blocks), FEATURES)


@torch.no_grad()
@pytest.mark.parametrize("join_layer", [0, 1])
def test_own_blocks_start_as_the_shared_ones(tiny_bert_dir, join_layer):
    """Copies of the pretrained blocks: before training, the same logits as the shared model, scored
    from scratch and from the pipeline's cached lower states."""
    (bi, shared), (_, own) = (pair(tiny_bert_dir, join_layer, kind) for kind in ("shared", "own"))
    shared.eval(), own.eval(), bi.eval()
    assert len(own.blocks) == 2 - join_layer and shared.blocks is None
    assert all(a is not b for a, b in zip(own.blocks, own.backbone.layers[join_layer:]))
    text, image = bi.tokenize(TEXTS[:5]), collate_images(images(5))
    reference = shared.score(text, image)
    assert reference.std() > 1e-3  # the pairs differ: a wrong row would show
    assert torch.allclose(own.score(text, image), reference, atol=1e-6)
    every = {
        kind: RetrieveRerank(bi, cross, progress=False).score_all(TEXTS, images())
        for kind, cross in (("shared", shared), ("own", own))
    }
    assert torch.allclose(every["own"], every["shared"], atol=2e-3)  # (the late cache is float16)


def test_the_matching_loss_reaches_the_own_blocks_and_the_shared_lower_blocks_only(tiny_bert_dir):
    _, own = pair(tiny_bert_dir, 1, "own")
    own.score(own.tokenize(TEXTS[:4]), collate_images(images(4))).square().sum().backward()

    def grad(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad(own.backbone.layers[1]) == 0.0  # the bi-encoder's upper block: untouched
    assert grad(own.blocks[0]) > 0 and grad(own.backbone.layers[0]) > 0  # own upper block, shared lower one


@pytest.mark.parametrize(
    "override, key",
    [
        (["model.cross_blocks=own", "adapters.enabled=true"], "model.cross_blocks"),
        (["model.cross_blocks=own", "model.robust_join=true"], "model.robust_join"),
        (["model.cross_blocks=own", "sweep.join=true"], "sweep.join"),
        (["model.cross_blocks=mine"], "model.cross_blocks"),
    ],
)
def test_own_blocks_settings_that_cannot_work_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load(None, override)


def test_own_blocks_join_where_they_start(tiny_bert_dir):
    _, own = pair(tiny_bert_dir, 1, "own")
    with pytest.raises(ValueError, match="joins there only"):
        with own.joining_at(0):
            pass


def test_own_blocks_train_at_the_backbone_rate_and_reload_from_the_checkpoint(tiny_bert_dir, tmp_path):
    run = main(
        [
            f"output_dir={tmp_path}",
            "name=own",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            "model.cross_blocks=own",
        ]
        + LATE
    )
    metrics = json.loads((run / "metrics.json").read_text())
    system, cfg = load_system(run / "checkpoints" / "best.ckpt")
    blocks = system.cross_encoder.blocks
    assert blocks is not None and len(blocks) == 1
    own_ids = {id(p) for p in blocks.parameters()}
    new_ids = {id(p) for p in system.backbone.new_parameters() + system.cross_encoder.new_parameters()}
    assert own_ids and not own_ids & new_ids  # pretrained copies: trained at optim.lr, not optim.new_lr
    # the upper block of the bi-encoder and the cross-encoder's copy have moved apart in training
    assert not torch.allclose(blocks[0].output.dense.weight, system.backbone.layers[1].output.dense.weight)
    split = load_synthetic(cfg.data.synthetic, cfg.data.root)["test"].filter_languages(["en"])
    again = RetrieveRerank.from_config(system, cfg.eval, progress=False).evaluate(split, ["rerank@5"], cfg.eval.ks)
    assert again["test/rerank@5/rsum"] == pytest.approx(metrics["test/rerank@5/rsum"])


def test_other_families_refuse_own_blocks(tiny_clip_dir):
    from retrerank.build import build_backbone

    with pytest.raises(ValueError, match="model.cross_blocks=own"):
        build_backbone(ModelConfig(backbone=tiny_clip_dir, join_layer=0, cross_blocks="own"), lambda: FEATURES)
