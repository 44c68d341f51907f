import pytest
import torch

from retrerank.adapters.fusion import add_fusion, prune_fusion, record_fusion
from retrerank.adapters.inject import add_adapter_set
from retrerank.adapters.sites import AdaptedSite
from retrerank.adapters.switch import Fuse
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import AdapterConfig


@pytest.fixture
def backbone(tiny_bert_dir):
    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8).eval()
    for name in ("a", "b", "c"):
        for adapter in add_adapter_set(backbone, name, AdapterConfig(reduction_factor=4)):
            for p in adapter.parameters():
                torch.nn.init.normal_(p, std=0.5)
    return backbone


def test_uniform_fusion_is_the_mean_of_the_adapters(backbone):
    fuse = add_fusion(backbone, "f", ["a", "b", "c"])
    site = next(m for m in backbone.modules() if isinstance(m, AdaptedSite))
    torch.nn.init.zeros_(site.fusions["f"].query.weight)  # equal scores for every adapter
    h, residual = torch.randn(2, 5, site.dense.in_features), torch.randn(2, 5, 32)
    with backbone.adapter_switch.use(fuse):
        fused = site(h, residual)
    summed = site.dropout(site.dense(h)) + residual  # pfeiffer: each adapter reads LN(f + x), adds to f + x
    expected = site.LayerNorm(torch.stack([site.adapters[n](site.LayerNorm(summed), summed) for n in "abc"]).mean(0))
    assert torch.allclose(fused, expected, atol=1e-5)


def test_fusion_trains_while_adapters_stay_frozen(backbone):
    fuse = add_fusion(backbone, "f", ["a", "b", "c"])
    for name, p in backbone.named_parameters():
        p.requires_grad = ".fusions." in name
    text = backbone.tokenize(["a red circle"])
    with backbone.adapter_switch.use(fuse):
        backbone.encode_text(text)[0].sum().backward()
    grads = {n: p.grad for n, p in backbone.named_parameters()}
    assert all(grads[n] is not None for n in grads if ".fusions." in n)
    assert all(g is None for n, g in grads.items() if ".adapters." in n)


def test_recorded_activations_and_pruning(backbone):
    fuse = add_fusion(backbone, "f", ["a", "b", "c"])
    text = backbone.tokenize(["a red circle", "a blue star left of a green square"])
    with record_fusion(backbone, "f") as rec, torch.no_grad(), backbone.adapter_switch.use(fuse):
        backbone.encode_text(text)
    acts = rec.activations()
    assert acts.shape == (2, 3) and torch.allclose(acts.sum(1), torch.ones(2), atol=1e-5)
    hand = torch.tensor([[0.5, 0.1, 0.4], [0.3, 0.2, 0.5]])
    assert prune_fusion(fuse, hand, 2) == Fuse("f", ("a", "c"))
    with torch.no_grad():
        with backbone.adapter_switch.use(prune_fusion(fuse, acts, 3)):
            all_kept = backbone.encode_text(text)[0]
        with backbone.adapter_switch.use(fuse):
            unpruned = backbone.encode_text(text)[0]
        with backbone.adapter_switch.use(prune_fusion(fuse, hand, 1)):
            single = backbone.encode_text(text)[0]
    assert torch.equal(all_kept, unpruned) and not torch.allclose(single, unpruned)
    with pytest.raises(ValueError, match="keep=4"):
        prune_fusion(fuse, hand, 4)


def test_fusion_needs_blocks_with_all_its_sets(backbone):
    with pytest.raises(ValueError, match="no adapted block"):
        add_fusion(backbone, "g", ["a", "zzz"])
