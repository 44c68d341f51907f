"""The one-set fast path of adapted sites (retrerank.adapters.sites `_Adapted.adapt`) and the
adapter's functional forward (BottleneckAdapter.forward) compute what the module composition
x + up(act(down(x))) computes: the same outputs and gradients, bit for bit, with the current
weights and sets."""

import pytest
import torch
from torch import nn

from retrerank.adapters.bottleneck import ACTIVATIONS, BottleneckAdapter
from retrerank.adapters.inject import adapted_sites, add_adapter_set
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import AdapterConfig


class Reference(nn.Module):
    """The adapter as sub-module calls (its forward before the fast path)."""

    def __init__(self, adapter: BottleneckAdapter):
        super().__init__()
        self.adapter = adapter
        self.ln_before = adapter.ln_before  # the placement the site reads

    def forward(self, x, residual=None):
        a = self.adapter
        out = a.up(a.act(a.down(x)))
        return (x if residual is None else residual) + out if a.residual else out


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_functional_forward_equals_the_module_composition_with_gradients(act, residual):
    torch.manual_seed(0)
    adapter = BottleneckAdapter(16, 4, act, residual, init_std=0.5)
    x = torch.randn(2, 3, 16, requires_grad=True)
    fast = adapter(x)
    fast_grads = torch.autograd.grad(fast.square().sum(), [x, *adapter.parameters()])
    slow = Reference(adapter)(x)
    slow_grads = torch.autograd.grad(slow.square().sum(), [x, *adapter.parameters()])
    assert torch.equal(fast, slow)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, slow_grads))


@pytest.mark.parametrize("case", ["non_contiguous", "bf16_autocast", "chunk_of_a_batch"])
def test_functional_forward_equals_the_module_composition_on_views_and_under_autocast(case):
    torch.manual_seed(0)
    adapter = BottleneckAdapter(16, 4, init_std=0.5)
    x = torch.randn(3, 5, 16)
    if case == "non_contiguous":
        x = x.transpose(0, 1)
    if case == "chunk_of_a_batch":  # parallel sets: each set reads a chunk (a view) of the batch
        x = torch.randn(6, 5, 16).chunk(2)[1]
    before = x.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16_autocast"):
        fast, slow = adapter(x), Reference(adapter)(x)
    assert fast.dtype == slow.dtype and torch.equal(fast, slow)
    assert torch.equal(x, before)  # the input is never written to


@pytest.fixture
def backbone(tiny_bert_dir):
    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8).eval()
    for name, cfg in (
        ("a", AdapterConfig(kind="houlsby", reduction_factor=4)),
        ("p", AdapterConfig(reduction_factor=4, leave_out=[0])),
    ):
        for adapter in add_adapter_set(backbone, name, cfg):
            for p in adapter.parameters():  # far from the identity, so that running an adapter shows
                nn.init.normal_(p, std=0.5)
    return backbone


@torch.no_grad()
def test_one_active_set_equals_the_general_path_and_the_module_composition(backbone):
    text = backbone.tokenize(["a red circle left of a blue square", "a star"])
    encode = lambda: backbone.encode_text(text)[0]  # noqa: E731
    switch = backbone.adapter_switch
    for name in ("a", "p"):  # p leaves block 0 out
        for drop in (0, 1):
            with switch.use(name, drop=drop):
                fast = encode()
            with switch.use((name,), drop=drop):  # one set "in parallel": the general path, per-set dispatch
                general = encode()
            sites = adapted_sites(backbone)
            saved = [dict(site.adapters) for site in sites]
            for site in sites:  # the same weights run as module calls
                for key in list(site.adapters):
                    site.adapters[key] = Reference(site.adapters[key])
            try:
                with switch.use(name, drop=drop):
                    reference = encode()
            finally:
                for site, adapters in zip(sites, saved):
                    site.adapters.update(adapters)
            assert torch.equal(fast, general) and torch.equal(fast, reference), (name, drop)
    assert not torch.equal(fast, encode())  # the adapters did run


@torch.no_grad()
def test_fast_path_reads_the_current_sets_weights_and_switch_and_keeps_hooks(backbone):
    text = backbone.tokenize(["a small green star"])
    switch = backbone.adapter_switch
    with switch.use("a"):
        before = backbone.encode_text(text)[0]
    site = adapted_sites(backbone)[-1]
    calls = []
    handle = site.adapters["a"].register_forward_hook(lambda *args: calls.append(1))
    site.adapters["a"].up.bias.add_(1.0)  # a changed weight is the one used
    with switch.use("a"):
        changed = backbone.encode_text(text)[0]
    assert calls == [1] and not torch.equal(changed, before)
    handle.remove()
    site.adapters["a"] = nn.Identity()  # a replaced adapter is the one that runs
    switch.drop = 0  # set directly, not through use(): read at every forward
    with switch.use("a"):
        replaced = backbone.encode_text(text)[0]
    assert not torch.equal(replaced, changed)
    switch.active = "a"
    try:
        assert torch.equal(backbone.encode_text(text)[0], replaced)
        switch.drop = backbone.num_layers  # AdapterDrop of every block: the plain model
        assert torch.equal(backbone.encode_text(text)[0], backbone_plain(backbone, text))
    finally:
        switch.active, switch.drop = None, 0


def backbone_plain(backbone, text):
    with backbone.adapter_switch.use(None):
        return backbone.encode_text(text)[0]
