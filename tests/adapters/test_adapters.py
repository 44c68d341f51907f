import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from retrerank.adapters.inject import adapter_sets, add_adapter_set
from retrerank.adapters.training import count_trainable
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import AdapterConfig
from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord


@pytest.fixture
def backbone(tiny_bert_dir):
    torch.manual_seed(0)
    return SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8).eval()


def layer_outputs(backbone, fn):
    """Hidden states after each block while fn() runs."""
    seen = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
        for layer in backbone.layers
    ]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return seen


def randomise(adapters):
    for adapter in adapters:  # far from identity, so that running an adapter shows
        for p in adapter.parameters():
            torch.nn.init.normal_(p, std=0.5)


def test_pfeiffer_on_bert_base_adds_exactly_the_paper_count():
    backbone = SingleStreamBackbone(BertModel(BertConfig()), None, feature_dim=2048)
    before = sum(p.numel() for p in backbone.parameters())
    add_adapter_set(backbone, "task", AdapterConfig(kind="pfeiffer", reduction_factor=16))
    assert sum(p.numel() for p in backbone.parameters()) - before == 12 * (768 * 48 + 48 + 48 * 768 + 768) == 894_528


def test_houlsby_has_two_adapters_per_block_and_leave_out_skips_blocks(backbone):
    assert len(add_adapter_set(backbone, "h", AdapterConfig(kind="houlsby", reduction_factor=4))) == 2 * 2
    assert len(add_adapter_set(backbone, "p", AdapterConfig(kind="pfeiffer", leave_out=[0], reduction_factor=4))) == 1
    assert adapter_sets(backbone) == ["h", "p"]
    with pytest.raises(ValueError, match="already exists"):
        add_adapter_set(backbone, "p", AdapterConfig(reduction_factor=4))
    with pytest.raises(ValueError, match="does not divide"):
        add_adapter_set(backbone, "q", AdapterConfig(reduction_factor=5))


def test_new_adapters_are_close_to_identity_and_off_means_the_plain_model(backbone):
    text = backbone.tokenize(["a red circle left of a blue square"])
    plain, _ = backbone.encode_text(text)
    add_adapter_set(backbone, "a", AdapterConfig(reduction_factor=4))
    with backbone.adapter_switch.use("a"):
        adapted, _ = backbone.encode_text(text)
    off, _ = backbone.encode_text(text)
    assert torch.equal(off, plain)
    assert not torch.equal(adapted, plain) and torch.allclose(adapted, plain, atol=5e-2)


def test_drop_removes_adapters_from_the_lowest_blocks_only(backbone):
    text = backbone.tokenize(["a small green star"])
    randomise(add_adapter_set(backbone, "a", AdapterConfig(reduction_factor=4)))
    plain = layer_outputs(backbone, lambda: backbone.encode_text(text))
    with backbone.adapter_switch.use("a", drop=1):
        dropped = layer_outputs(backbone, lambda: backbone.encode_text(text))
    assert torch.equal(dropped[0], plain[0]) and not torch.allclose(dropped[1], plain[1])
    assert backbone.adapter_switch.drop == 0 and backbone.adapter_switch.active is None  # restored


def test_frozen_blocks_below_the_first_adapter_build_no_autograd_graph(backbone):
    add_adapter_set(backbone, "a", AdapterConfig(reduction_factor=4))
    for name, p in backbone.named_parameters():
        p.requires_grad = ".adapters." in name
    text = backbone.tokenize(["a red circle", "a blue square"])
    with backbone.adapter_switch.use("a", drop=1):
        outs = layer_outputs(backbone, lambda: backbone.encode_text(text))
    assert outs[0].grad_fn is None and not outs[0].requires_grad
    assert outs[1].grad_fn is not None
    with backbone.adapter_switch.use("a", drop=0):
        assert layer_outputs(backbone, lambda: backbone.encode_text(text))[0].grad_fn is not None


def test_parallel_sets_share_lower_blocks_and_equal_each_set_alone(backbone):
    for name in ("a", "b", "c"):
        randomise(add_adapter_set(backbone, name, AdapterConfig(reduction_factor=4)))
    rng = np.random.default_rng(0)
    images = [
        ImageRecord(
            f"i{i}", rng.normal(size=(3, 8)).astype(np.float32), np.tile(np.float32([[0.1, 0.2, 0.5, 0.6]]), (3, 1))
        )
        for i in range(2)
    ]
    text, image = backbone.tokenize(["a red circle", "two stars"]), collate_images(images)
    hidden, mask = backbone.embed_pair(text, image)
    with torch.no_grad():
        together = backbone.encode_parallel(hidden, mask, ["a", "b", "c"], shared=1)
        for name, out in zip("abc", together):
            with backbone.adapter_switch.use(name, drop=1):
                alone, _ = backbone.encode_pair(text, image)
            assert torch.allclose(out[mask], alone[mask], atol=1e-5), name
    assert not torch.allclose(together[0], together[1])


def test_count_trainable_counts_only_parameters_that_train(backbone):
    added = add_adapter_set(backbone, "a", AdapterConfig(reduction_factor=4))
    for p in backbone.parameters():
        p.requires_grad = False
    for adapter in added:
        adapter.requires_grad_(True)
    assert count_trainable(backbone) == 2 * (32 * 8 + 8 + 8 * 32 + 32)
